# PostgreSQL from Debian's packages, for machines that cannot pull postgres:16 (docker-compose.local.yaml).
# It honours what deploy/docker-compose.yaml gives the official image: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB, data in /var/lib/postgresql/data, pg_isready for the health check.
ARG BASE_IMAGE=heymilo/debian-python:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
