from django.db import migrations, models


def history_counted(apps, schema_editor):
    # What each room's history already holds, counted as every commit counts from now on: its
    # op-log rows and its stored copies of the text.
    from rooms.changes import copy_bytes, stored_bytes

    Room = apps.get_model("rooms", "Room")
    Op = apps.get_model("rooms", "Op")
    Snapshot = apps.get_model("rooms", "Snapshot")
    totals: dict[str, int] = {}
    for room_id, op in Op.objects.values_list("room_id", "op").iterator(chunk_size=2000):
        totals[room_id] = totals.get(room_id, 0) + stored_bytes(op)
    for room_id, code in Snapshot.objects.values_list("room_id", "code").iterator(chunk_size=50):
        totals[room_id] = totals.get(room_id, 0) + copy_bytes(code)
    for room_id, total in totals.items():
        Room.objects.filter(id=room_id).update(history_bytes=total)


class Migration(migrations.Migration):
    dependencies = [("rooms", "0007_history")]

    operations = [
        migrations.AddField(
            model_name="room",
            name="history_bytes",
            field=models.PositiveBigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(history_counted, migrations.RunPython.noop),
    ]
