import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoproject.settings")

app = Celery("demoproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
