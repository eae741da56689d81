FROM python:3.11-slim
WORKDIR /opt/recovery
COPY pyproject.toml README.md ./
COPY app ./app
COPY topics ./topics
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/recovery recovery \
    && mkdir -p /var/lib/recovery && chown recovery /var/lib/recovery
ENV RECOVERY_TOPICS_DIR=/opt/recovery/topics \
    RECOVERY_SCHEMAS_DIR=/opt/recovery/schemas \
    RECOVERY_DATA_DIR=/var/lib/recovery
USER recovery
EXPOSE 6066
ENTRYPOINT ["recovery"]
CMD ["worker"]
