# The pipeline's Airflow image: Apache Airflow's official 3.3.2 image (Python 3.11, the
# version requirements.lock is compiled for) plus this project's locked runtime
# requirements. Build it with `docker compose build` (see docs/DEPLOYMENT.md).
#
# No secret goes into the image: connections and keys reach the containers as environment
# variables at run time (.env), and .dockerignore lets only the files below into the
# build context.
FROM apache/airflow:3.3.2-python3.11

# Folders that docker-compose mounts named volumes on. A new named volume takes the owner
# and mode of the folder it is mounted over, so containers running as any UID in group 0
# (the official image's convention) can write the lake, the shared rate-limit ledger and
# the simulator's state. (50000 is the image's airflow user; numeric ids let Kubernetes
# check runAsNonRoot.)
USER 0
RUN mkdir -p /opt/airflow/lake /opt/airflow/mde-rate-ledger /opt/airflow/mde-sim \
    && chown 50000:0 /opt/airflow/lake /opt/airflow/mde-rate-ledger /opt/airflow/mde-sim \
    && chmod 2775 /opt/airflow/lake /opt/airflow/mde-rate-ledger /opt/airflow/mde-sim
USER 50000

# The lock pins apache-airflow==3.3.2 itself, so pip keeps the image's Airflow rather than
# replacing it. `pip check` stops the build when a pinned version breaks a provider that
# the base image ships, instead of leaving that to surface at run time.
COPY --chown=50000:0 requirements.lock /opt/airflow/requirements.lock
RUN pip install --no-cache-dir -r /opt/airflow/requirements.lock \
    && pip check

# The code is baked in as well, so the image runs without bind mounts (Kubernetes,
# workers on other hosts); docker-compose mounts the working tree over these folders.
COPY --chown=50000:0 dags /opt/airflow/dags
COPY --chown=50000:0 plugins /opt/airflow/plugins
COPY --chown=50000:0 include /opt/airflow/include
