# The SOMVAD control plane. Built by docker-compose.yml next to the mixer
# image (asterisk-config/Dockerfile) and PostgreSQL.
FROM python:3.11-slim

WORKDIR /opt/somvad
COPY setup.cfg pyproject.toml README.md ./
COPY app ./app
COPY api ./api
COPY ari_handlers ./ari_handlers
COPY recordings ./recordings
RUN pip install --no-cache-dir .

# The mixer runs in its own container: never provision one here.
ENV SOMVAD_MANAGE_ASTERISK=0 \
    SOMVAD_HOST=0.0.0.0 \
    SOMVAD_DATA_DIR=/var/lib/somvad
EXPOSE 8080/tcp
CMD ["somvad", "run"]
