"""A one-file Django project: ``python manage.py runserver 127.0.0.1:PORT``."""

import json
import os
import sys
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
    LOGGING_CONFIG=None,
)


def index(request):
    return JsonResponse({"path": "/", "pid": os.getpid()})


def slow(request):
    time.sleep(float(request.GET.get("seconds", "1")))
    return JsonResponse({"path": "/slow", "pid": os.getpid()})


def stream(request):
    chunks, delay = int(request.GET.get("chunks", "5")), float(request.GET.get("delay", "0.2"))

    def body():
        for i in range(chunks):
            time.sleep(delay)
            yield "chunk %d\n" % i

    return StreamingHttpResponse(body(), content_type="text/plain")


def headers(request):
    return HttpResponse(
        json.dumps({k.lower(): v for k, v in request.headers.items()}), content_type="application/json"
    )


urlpatterns = [path("", index), path("slow", slow), path("stream", stream), path("headers", headers)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
