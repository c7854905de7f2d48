# workbench in a container: the AgentChat relay (default) or a project's page
# server. Multi-stage: a Rust builder makes one statically linked binary; the
# final image holds only that file (distroless "static", which adds a nonroot
# user and CA certificates to an otherwise empty image).
#
# Build (from the repository root):
#   docker build -t workbench .
#   docker build --build-arg TARGET=aarch64-unknown-linux-gnu -t workbench .   # on an arm64 host
#
# `workbench deploy --provider docker --dockerfile` writes this same file
# (the binary embeds it) next to a docker-compose.yml; see docs/deploy.md.
#
# Relay (AgentChat clients connect to ws://<host>:6667):
#   docker run -d --name relay -p 6667:6667 workbench
#   docker run -d --name relay -p 6667:6667 workbench relay --port 6667 --name lab-relay
# Over wss:// (the key must be readable by uid 65532):
#   docker run -d --name relay -p 6667:6667 -v $PWD/certs:/certs:ro workbench \
#     relay --host 0.0.0.0 --port 6667 --cert /certs/fullchain.pem --key /certs/privkey.pem
#
# Page server for one project (state and logs persist in the volume). Inside
# the container the LAN address is Docker's, so tell it the host's address for
# the URLs it prints (WORKBENCH_HOST or --public-host):
#   docker run -d --name bench1 -p 8070:8070 \
#     -v workbench-data:/home/nonroot/workbench \
#     -e WORKBENCH_HOST=192.168.1.20 \
#     workbench serve bench1 --port 8070
#   curl http://127.0.0.1:8070/health
#   docker exec bench1 /workbench list
#
# `docker stop` sends SIGTERM, which both servers handle as a clean shutdown.

ARG TARGET=x86_64-unknown-linux-gnu

FROM rust:1-bookworm AS build
ARG TARGET
WORKDIR /src
# Dependencies first, so source edits do not refetch crates (empty stand-ins
# for the targets Cargo.toml names, removed before the real sources arrive).
COPY Cargo.toml Cargo.lock ./
# tiny_http is patched in-tree (Cargo.toml [patch.crates-io]).
COPY vendor ./vendor
RUN mkdir -p src && touch src/main.rs src/lib.rs \
 && cargo fetch --locked \
 && rm -rf src
COPY src ./src
COPY static ./static
# `workbench deploy --dockerfile` writes this file, embedded at build time.
COPY Dockerfile ./
# The same static build that scripts/release-size.sh measures.
COPY scripts/release-build.sh ./scripts/
RUN rustup target add "$TARGET" \
 && cp "$(scripts/release-build.sh "$TARGET")" /workbench \
 && mkdir -p /empty-home/workbench

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /workbench /workbench
# A home folder owned by the image's user, so a fresh named volume mounted
# here is writable by it.
COPY --from=build --chown=65532:65532 /empty-home/workbench /home/nonroot/workbench
ENV HOME=/home/nonroot \
    WORKBENCH_HOME=/home/nonroot/workbench
VOLUME ["/home/nonroot/workbench"]
USER nonroot
# 6667: relay. 8070-8079: page servers (`serve` picks the first free one).
EXPOSE 6667 8070-8079
ENTRYPOINT ["/workbench"]
CMD ["relay", "--host", "0.0.0.0", "--port", "6667"]
