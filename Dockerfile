# geartrain job server image.
#
#   docker build -t geartrain .
#   docker run -d --name geartrain -p 4730:4730 -v geartrain-queue:/var/lib/geartrain geartrain
#
# The image runs `geartrain serve` as the unprivileged user geartrain, with its SQLite
# queue in the volume /var/lib/geartrain (background jobs survive a new container) and
# its log on standard error (`docker logs`). Other sub-commands run in the same image:
#   docker run --rm --network host geartrain admin status
# Options go after `serve`, e.g. `docker run ... geartrain serve --queue postgresql://...`
# (a CMD given to `docker run` replaces the one below, so repeat the --queue you want).

FROM python:3.11-slim-bookworm AS build
# A C compiler for mypyc, which compiles the hot modules (hatch_build.py); the build stage only.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE hatch_build.py ./
COPY src ./src
COPY packaging/man ./packaging/man
RUN GEARTRAIN_BUILD=compiled pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# A fixed uid/gid, so that a volume or bind mount can be given to it by number.
RUN groupadd --system --gid 4730 geartrain \
    && useradd --system --uid 4730 --gid geartrain --home-dir /var/lib/geartrain \
        --create-home --shell /usr/sbin/nologin geartrain
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(echo /wheels/geartrain-*.whl)[uvloop]" && rm -rf /wheels
USER geartrain
WORKDIR /var/lib/geartrain
VOLUME /var/lib/geartrain
EXPOSE 4730
# SIGTERM stops at once; background jobs are already durable in the queue. For a
# graceful stop that lets running jobs finish: docker kill --signal USR1 geartrain.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD ["geartrain", "admin", "-h", "127.0.0.1", "ping"]
ENTRYPOINT ["geartrain"]
CMD ["serve", "--queue", "sqlite:////var/lib/geartrain/geartrain.sqlite3"]
