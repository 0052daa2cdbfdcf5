# ovn-vipd, and the OVN control-plane tools docker-compose.yml runs beside it.
# Stage 1 builds the binaries; stage 2 is a slim Debian 12 with OVN 23.03 (the versions the tests
# run against) and nothing of the toolchain.
# No protobuf package: build.rs compiles proto/ with the pure-Rust protox.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ovn-vipd --bin vipctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ovn-central openvswitch-common ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ovn-vipd /src/target/release/vipctl /usr/local/bin/
VOLUME ["/var/lib/ovn-vipd"]
# gRPC, metrics
EXPOSE 50051 50052
CMD ["ovn-vipd"]
