import django.db.models.deletion
from django.db import migrations, models

# rooms.document.SNAPSHOT_EVERY when this migration was written.
SNAPSHOT_EVERY = 100


def snapshots_from_the_op_log(apps, schema_editor):
    """Existing rooms get the copies (and authorship) new changes write from now on: each room's
    op log is replayed once from its initial text."""
    from rooms import ot
    from rooms.history.authorship import Authorship

    Room = apps.get_model("rooms", "Room")
    Op = apps.get_model("rooms", "Op")
    Snapshot = apps.get_model("rooms", "Snapshot")
    for room in Room.objects.only("id", "initial_code", "created_at").iterator():
        text = room.initial_code
        authorship = Authorship.initial(text, int(room.created_at.timestamp() * 1000))
        copies = []
        ops = (
            Op.objects.filter(room_id=room.id)
            .order_by("version")
            .values_list("version", "op", "client", "ts")
        )
        for version, op, client, ts in ops.iterator(chunk_size=2000):
            authorship.apply(text, op, author=client, version=version, ts=ts)
            text = ot.apply(text, op)
            if version % SNAPSHOT_EVERY == 0:
                copies.append(
                    Snapshot(
                        room_id=room.id,
                        version=version,
                        ts=ts,
                        code=text,
                        authorship=authorship.to_json(),
                    )
                )
                if len(copies) >= 50:
                    Snapshot.objects.bulk_create(copies)
                    copies = []
        Snapshot.objects.bulk_create(copies)


class Migration(migrations.Migration):

    dependencies = [
        ('rooms', '0006_accounts'),
    ]

    operations = [
        migrations.CreateModel(
            name='Author',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('client', models.CharField(max_length=64)),
                ('name', models.CharField(max_length=64)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('room', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='authors', to='rooms.room')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('room', 'client'), name='author_unique_room_client')],
            },
        ),
        migrations.CreateModel(
            name='Snapshot',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('version', models.PositiveBigIntegerField()),
                ('ts', models.BigIntegerField(help_text='epoch milliseconds of the change of this version')),
                ('code', models.TextField()),
                ('authorship', models.TextField()),
                ('room', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='snapshots', to='rooms.room')),
            ],
            options={
                'ordering': ['room', 'version'],
                'constraints': [models.UniqueConstraint(fields=('room', 'version'), name='snapshot_unique_room_version')],
            },
        ),
        migrations.RunPython(snapshots_from_the_op_log, migrations.RunPython.noop),
    ]
