# The pipeline's Airflow image: Apache Airflow's official 3.3.2 image (Python 3.11, the
# version requirements.lock is compiled for) plus this project's locked runtime
# requirements and the pipeline's wheel. Build it with `make dist && docker compose build`
# (see docs/DEPLOYMENT.md).
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

# The project's packages go on top of the image's. The rule: this step only ADDS packages;
# it never up- or downgrades (or removes) a package the base image ships. It is enforced
# here, against the real image: the image's own package list (`pip list`) constrains the
# install, so a lock that would change any of them stops the build (ResolutionImpossible)
# instead of changing the image. The lock agrees by construction: `make lock` compiles it
# against constraints/airflow-3.3.2-python3.11.txt, this image's packages reconstructed,
# and `make image-check` rehearses this very RUN on that package set. The lock also pins
# apache-airflow==3.3.2 itself. `pip check` then stops the build on any broken requirement.
COPY --chown=50000:0 requirements.lock /opt/airflow/requirements.lock
RUN image_packages="$(mktemp)" \
    && pip list --format=freeze > "${image_packages}" \
    && pip install --no-cache-dir -r /opt/airflow/requirements.lock -c "${image_packages}" \
    && pip check \
    && rm -f "${image_packages}"

# The pipeline itself: the wheel `make dist` builds (dist/ holds exactly one), in its own
# layer so a code change reuses the one above. Its requirements are the lock's, installed
# above: --no-deps adds nothing else, and pip check proves they are all there. Airflow
# finds the plugin and the connection type `mde` through the wheel's entry points; no
# plugins folder is needed.
COPY --chown=50000:0 dist /opt/airflow/dist
RUN pip install --no-cache-dir --no-deps /opt/airflow/dist/*.whl \
    && pip check

# The two DAG files (they only call the package) and the tools are baked in as well, so
# the image runs without bind mounts (Kubernetes, workers on other hosts); docker-compose
# mounts the working tree over these folders (and ./plugins, for a repository checkout).
COPY --chown=50000:0 dags /opt/airflow/dags
COPY --chown=50000:0 include /opt/airflow/include
