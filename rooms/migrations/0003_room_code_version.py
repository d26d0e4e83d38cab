from django.db import migrations, models


def snapshots_are_current(apps, schema_editor):
    # Until now every commit rewrote `code`, so it is the text at `version`.
    Room = apps.get_model("rooms", "Room")
    Room.objects.update(code_version=models.F("version"))


class Migration(migrations.Migration):
    dependencies = [("rooms", "0002_private_rooms")]

    operations = [
        migrations.AddField(
            model_name="room",
            name="code_version",
            field=models.PositiveBigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(snapshots_are_current, migrations.RunPython.noop),
    ]
