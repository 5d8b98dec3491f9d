# An S3 stand-in for machines that cannot pull MinIO (docker-compose.local.yaml): moto's server, from PyPI.
ARG BASE_IMAGE=heymilo/debian-python:bookworm
FROM ${BASE_IMAGE}
ARG EXTRA_CA_PEM=""
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv "$VIRTUAL_ENV" \
    && if [ -n "$EXTRA_CA_PEM" ]; then \
         printf '%s\n' "$EXTRA_CA_PEM" | cat /etc/ssl/certs/ca-certificates.crt - > /tmp/pip-ca.pem \
         && export PIP_CERT=/tmp/pip-ca.pem; \
       fi \
    && pip install --no-cache-dir 'moto[server]>=5,<6' \
    && rm -f /tmp/pip-ca.pem && useradd --uid 10002 s3 && mkdir -p /data && chown s3 /data
COPY s3-serve.py /opt/s3/serve.py
USER s3
EXPOSE 9000
# Objects live in moto's memory while it runs and in /data (the compose file's volume) across restarts.
CMD ["python3", "/opt/s3/serve.py"]
