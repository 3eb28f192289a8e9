# The itvsam gateway: FastAPI under uvicorn. Slim, no CUDA, no torch, no model or worker code (it queues jobs by task
# name; the import-linter contracts keep service/ and jobs/ free of model/ and workers/).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 itvsam \
    && useradd --system --uid 10001 --gid itvsam --home-dir /srv/itvsam --create-home itvsam
WORKDIR /srv/itvsam/app
COPY pyproject.toml README.md ./
COPY dicomrt dicomrt
COPY jobs jobs
COPY service service
COPY itvsam itvsam
RUN pip install ".[gateway]" && python -c "import service.api.app, itvsam.cli"
RUN mkdir -p /data/store && chown itvsam:itvsam /data/store
USER itvsam
ENV ITVSAM_STORE_DIR=/data/store
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["itvsam", "serve", "--host", "0.0.0.0", "--port", "8000"]
