# The itvsam GPU worker: Celery with the merged SAM 3 held once per process. CUDA base, torch's CUDA build;
# the model is mounted read-only at /models/sam3 (ITVSAM_MODEL_DIR), an optional adapter at /models/adapter.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
# torch's CUDA build first, from the PyTorch index, so the engine extra's pin finds it installed.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
RUN groupadd --system --gid 10001 itvsam \
    && useradd --system --uid 10001 --gid itvsam --home-dir /srv/itvsam --create-home itvsam
WORKDIR /srv/itvsam/app
COPY pyproject.toml README.md ./
COPY dicomrt dicomrt
COPY jobs jobs
COPY model model
COPY workers workers
COPY itvsam itvsam
RUN pip install ".[engine,worker]" && python -c "import workers.tasks, workers.pipeline, itvsam.cli"
RUN mkdir -p /data/store && chown itvsam:itvsam /data/store
USER itvsam
ENV ITVSAM_STORE_DIR=/data/store ITVSAM_MODEL_DIR=/models/sam3 ITVSAM_DEVICE=cuda HF_HUB_OFFLINE=1
# Alive while its heartbeat is in Redis with the model loaded (ITVSAM_REDIS_URL).
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import json, socket, redis, os; from workers.settings import get_worker_settings; \
r = redis.Redis.from_url(get_worker_settings().redis_url); host = socket.gethostname(); \
beats = [json.loads(r.get(k)) for k in r.scan_iter(f'itvsam:worker:{host}:*')]; \
raise SystemExit(0 if any(b['model_loaded'] for b in beats) else 1)"
CMD ["itvsam", "worker", "--concurrency", "1"]
