"""Create or reset the service user that the town-builder client logs in as."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the user, or reset its password; prints nothing secret."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password-env", default="DRF_SEED_PASSWORD",
                            help="environment variable that holds the password")

    def handle(self, *args, **options):
        import os

        password = os.environ[options["password_env"]]
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.set_password(password)
        user.save()
        self.stdout.write(("created" if created else "updated") + " user " + user.get_username())
