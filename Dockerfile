# One image for every Kumulus role: `kumulus frontend|worker|autoscaler|up`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin kumulus

FROM debian:bookworm-slim AS kumulus
# Jobs are cloned with git and run with npm; bubblewrap sandboxes them.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl git nodejs npm bubblewrap \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kumulus /usr/local/bin/kumulus
RUN useradd --system --create-home kumulus
USER kumulus
WORKDIR /home/kumulus
ENTRYPOINT ["kumulus"]

# The autoscaler as Kumori runs it (`docker build --target autoscaler-kumori`):
# the manifests its `kumori` driver edits, at /kumori (writable by it), and
# Kumori's CLI. `kam` is on no public registry: pass where to download it
# (`--build-arg KAM_URL=https://...`), or mount it at /usr/local/bin/kam
# (kumori/README.md).
FROM kumulus AS autoscaler-kumori
USER root
ARG KAM_URL=""
RUN if [ -n "$KAM_URL" ]; then \
        curl -fsSL "$KAM_URL" -o /usr/local/bin/kam && chmod 755 /usr/local/bin/kam; \
    fi
COPY --chown=kumulus:kumulus kumori /kumori
USER kumulus
ENV KUMULUS_AUTOSCALER__DRIVER=kumori \
    KUMULUS_AUTOSCALER__KUMORI_MANIFEST=/kumori/deployments/system/manifest.cue
CMD ["autoscaler"]
