# outbox-relay image: built on Debian 12 with the same packages as scripts/install-deps.
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/install-deps scripts/install-deps
RUN scripts/install-deps
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRELAY_BUILD_TESTS=OFF \
 && cmake --build build --target outbox-relay

FROM debian:bookworm-slim
# One package per library the binary links (readelf's NEEDED), checked against the built binary
# by tests/docker/check_runtime_packages, so this list cannot drift from the code again.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpqxx-6.4 libpq5 librdkafka++1 librdkafka1 libyaml-cpp0.7 libspdlog1.10 libfmt9 \
      libcurl4 libmicrohttpd12 libprometheus-cpp-core1.0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home relay
COPY --from=build /src/build/outbox-relay /usr/local/bin/outbox-relay
USER relay
ENTRYPOINT ["outbox-relay"]
CMD ["run", "--config", "/etc/outbox-relay/relay.yaml"]
