# One image for every clickwire service; the command picks the service:
#   docker run clickwire redirector | enricher | sink | dispatcher | api | stack ...
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY clickwire ./clickwire
COPY services ./services
COPY schemas ./schemas
COPY deploy ./deploy
COPY tools ./tools
# The click encoder compiled with mypyc (tools/build_native.py); the compiler and mypy leave the image.
RUN pip install --no-cache-dir -e . \
 && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && pip install --no-cache-dir "mypy>=1.11,<3" && python tools/build_native.py \
 && python -c "from clickwire.native import compiled; assert compiled()" \
 && pip uninstall -y mypy && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home clickwire && mkdir -p /data && chown clickwire /data
USER clickwire
ENV CLICKWIRE_HOME=/data
ENTRYPOINT ["clickwire"]
