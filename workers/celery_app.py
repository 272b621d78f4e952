"""The Celery app, configured from the service settings (no URLs in code).

Run a GPU worker as ``featureviz worker`` (``-P prefork -c 1 -Q gpu``): prefork keeps Celery's
time limits working, the one child keeps the loaded-model cache, and TensorFlow is imported in
that child only, lazily, inside the task.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging

from service.logs import setup_logging as json_logging
from service.settings import Settings, get_settings

QUEUE = "gpu"
VISUALIZE_TASK = "featureviz.visualize"


def check_visibility(settings: Settings) -> None:
    """Refuse to start with a visibility timeout that would deliver a running job twice."""
    if settings.visibility_timeout < 1.5 * settings.job_hard_time_limit:
        raise RuntimeError(
            f"visibility_timeout ({settings.visibility_timeout}s) must be about 2x "
            f"job_hard_time_limit ({settings.job_hard_time_limit}s)"
        )


def make_celery(settings: Settings) -> Celery:
    check_visibility(settings)
    transport = {"visibility_timeout": settings.visibility_timeout}
    app = Celery("featureviz", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_default_queue=QUEUE,
        task_routes={VISUALIZE_TASK: {"queue": QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # a killed child's job goes back to the queue
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_hard_time_limit,
        result_expires=settings.job_result_ttl,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_ignore_result=True,  # the job record in Redis is the source of truth
    )
    return app


@setup_logging.connect
def _json_logs(**_: object) -> None:
    """Workers log JSON lines like the API; the job id comes with every line of a task."""
    json_logging(get_settings().log_level)


app: Celery  # declared only: ``__getattr__`` builds it on first use


def __getattr__(name: str) -> Celery:
    """``celery -A workers.celery_app`` finds ``app`` here, built on first use from settings."""
    if name in ("app", "celery"):
        global app
        app = make_celery(get_settings())
        import workers.tasks  # noqa: F401 - registers the tasks

        return app
    raise AttributeError(name)
