# syntax=docker/dockerfile:1
# Tributary: a change-data-capture daemon. Build: docker build -t tributary .
#
#   docker run --rm -e DATABASE_URL=postgres://user:pass@db:5432/shop -e INGEST_KEY=... -e SEARCH_KEY=... -p 8080:8080 -p 9464:9464 tributary
#   docker run --rm -v "$PWD/tributary.yaml:/etc/tributary/tributary.yaml:ro" -v tributary-data:/data --env-file .env tributary
#
# The configuration is /etc/tributary/tributary.yaml (TRIBUTARY_CONFIG), by default the bundled
# quick start (config/quickstart.yaml: bundled worker on :8080, metrics on :9464, data in /data);
# mount your own file over it, and pass secrets as environment variables (${VAR} in the file).
# The worker API listens on 0.0.0.0 here: it refuses to start on the quick start's well-known
# default keys, so pass INGEST_KEY and SEARCH_KEY (or mount a file with keys of your own).
# On SIGTERM the daemon drains pending batches (pipeline.drainTimeoutMs, default 30 s) and exits
# 0: give `docker stop -t 40` (or a Kubernetes termination grace) a little more than that.
# test/deploy.test.ts performs the runtime stage's steps in a temporary directory.

ARG NODE_VERSION=24

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY . .
RUN npm run build

FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    TRIBUTARY_CONFIG=/etc/tributary/tributary.yaml \
    TRIBUTARY_DATA=/data \
    TRIBUTARY_LISTEN=0.0.0.0:8080 \
    TRIBUTARY_METRICS=0.0.0.0:9464 \
    TRIBUTARY_HEALTH_URL=http://127.0.0.1:9464/healthz
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --no-audit --no-fund
COPY --from=build /app/dist ./dist
COPY config/quickstart.yaml /etc/tributary/tributary.yaml
# uid 1000 is the node image's unprivileged `node` user; numeric so Kubernetes can check runAsNonRoot.
RUN mkdir -p /data && chown 1000:1000 /data
USER 1000:1000
VOLUME /data
EXPOSE 8080 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.TRIBUTARY_HEALTH_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The flags of the bin's #! line (package.json bin: dist/src/cli.js).
ENTRYPOINT ["node", "--max-semi-space-size=4", "/app/dist/src/cli.js"]
CMD ["run"]
