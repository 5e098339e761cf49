# One image for every Kumulus role: `kumulus frontend|worker|autoscaler|up`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin kumulus

FROM debian:bookworm-slim
# Jobs are cloned with git and run with npm; bubblewrap sandboxes them.
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates git nodejs npm bubblewrap \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kumulus /usr/local/bin/kumulus
RUN useradd --system --create-home kumulus
USER kumulus
WORKDIR /home/kumulus
ENTRYPOINT ["kumulus"]
