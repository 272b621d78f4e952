"""Every setting of the service and its workers, from the environment and ``.env``.

One pydantic-settings class, read through a cached ``get_settings()`` that tests override;
no import-time singleton. Names are ``FEATUREVIZ_<FIELD>``, except ``REDIS_URL`` and
``API_KEYS``, which deployments set under their common names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Service and worker configuration; every field has a safe default."""

    model_config = SettingsConfigDict(
        env_prefix="FEATUREVIZ_", env_file=".env", extra="ignore", populate_by_name=True
    )

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "FEATUREVIZ_REDIS_URL"),
        description="Redis for metadata, jobs and the Celery broker; unset: `featureviz serve` "
        "starts its own.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("API_KEYS", "FEATUREVIZ_API_KEYS"),
        description="Comma-separated API keys; empty: no authentication.",
    )
    data_dir: Path = Field(default=Path("var"), description="Model store and run files.")

    max_model_bytes: int = Field(default=512 * MiB, description="Largest model upload.")
    max_image_bytes: int = Field(default=20 * MiB, description="Largest image upload.")
    max_image_pixels: int = Field(default=40_000_000, description="Largest decoded image.")
    max_images: int = Field(default=64, description="Images per activation request.")
    max_json_bytes: int = Field(default=32 * MiB, description="Largest JSON tensor answer.")
    max_layers: int = Field(default=2000, description="Layers a model may have.")
    max_params: int = Field(default=500_000_000, description="Parameters a model may have.")
    load_memory_bytes: int = Field(
        default=6 * 1024 * MiB, description="Memory limit of the child that first loads a model."
    )
    load_cpu_seconds: int = Field(default=300, description="CPU limit of that child.")
    load_wall_seconds: float = Field(default=300.0, description="Wall-clock limit of that child.")
    model_cache_size: int = Field(default=8, description="Loaded models kept in memory.")
    function_cache_size: int = Field(default=64, description="Compiled functions kept.")
    model_record_ttl: float = Field(
        default=1.0,
        ge=0,
        description="Seconds an API process reuses a model record it has read; a model deleted "
        "through another process stays usable here that long; 0: read Redis every time.",
    )

    job_max_steps: int = Field(default=2048, description="Most steps a job may ask for.")
    job_max_size: int = Field(default=512, description="Largest image side of a job.")
    job_max_channels: int = Field(default=64, description="Most channels in one job.")
    job_soft_time_limit: int = Field(default=1800, description="Seconds before a job is stopped.")
    job_hard_time_limit: int = Field(
        default=1900, description="Seconds before its worker is killed."
    )
    job_result_ttl: int = Field(default=7 * 24 * 3600, description="Seconds results are kept.")
    job_max_deliveries: int = Field(
        default=3, description="Times a job is started at most (1 + redeliveries after a crash)."
    )
    job_heartbeat_seconds: float = Field(default=2.0, description="Running job heartbeat period.")
    job_stale_seconds: float = Field(
        default=30.0, description="A running job without a heartbeat this long is reaped."
    )
    visibility_timeout: int = Field(
        default=3800, description="Redis visibility timeout; about 2x the hard time limit."
    )
    max_queued_per_key: int = Field(default=100, description="Queued jobs per API key.")
    webhook_secret: str = Field(default="", description="Secret signing job callbacks.")
    allow_private_callbacks: bool = Field(
        default=False, description="Allow callback_url on private or loopback addresses."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    docs: bool = Field(
        default=True,
        description="Serve /docs, /redoc and /openapi.json; they need no key even with "
        "API_KEYS set, so false hides them.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, value: list[str]) -> list[str]:
        if any(len(k) < 16 for k in value):
            raise ValueError("API keys must be at least 16 characters long")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> Settings:
        if self.job_hard_time_limit <= self.job_soft_time_limit:
            raise ValueError("job_hard_time_limit must exceed job_soft_time_limit")
        if self.visibility_timeout < 1.5 * self.job_hard_time_limit:
            raise ValueError(
                "visibility_timeout must be at least 1.5x job_hard_time_limit (about 2x is "
                "right); shorter, and a long job is delivered twice"
            )
        return self

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
