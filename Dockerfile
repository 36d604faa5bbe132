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
RUN pip install --no-cache-dir -e .
RUN useradd --create-home clickwire && mkdir -p /data && chown clickwire /data
USER clickwire
ENV CLICKWIRE_HOME=/data
ENTRYPOINT ["clickwire"]
