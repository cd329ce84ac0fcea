# The platform's four executables in one image: order-service, restaurant-service,
# delivery-service and test-client (the health check and a client to poke the services with),
# plus dev-credentials (with openssl) for compose's development credentials.
# docker-compose.yml runs one service per container from it, choosing the command.
#
# The builder installs the C libraries with the same scripts/install-deps CI uses (minimal: no test
# tools) and links the Swift standard library statically, so the runtime stage needs only the
# four C libraries and libstdc++ (what ldd lists) on a slim Debian, and runs as a non-root user.
# /credentials belongs to that user, so compose's credentials volume starts writable for it.
# Swift 6.3 as on the development machines (Task.immediate needs 6.2 or later).
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY . .
RUN INSTALL_DEPS_MINIMAL=1 scripts/install-deps \
    && for product in order-service restaurant-service delivery-service test-client; do \
         swift build -c release --static-swift-stdlib --product "$product" || exit 1; \
       done \
    && mkdir /out \
    && for product in order-service restaurant-service delivery-service test-client; do \
         cp "$(swift build -c release --static-swift-stdlib --show-bin-path)/$product" /out/ || exit 1; \
       done

FROM debian:bookworm-slim
# Versions follow the bookworm release the base image pins; pinning them here would only break the
# build on every Debian security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnghttp2-14 libprotobuf-c1 libhiredis0.14 libssl3 libstdc++6 openssl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 platform \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin platform \
    && mkdir /credentials && chown 10001:10001 /credentials
COPY --from=build /out/ /usr/local/bin/
COPY scripts/dev-credentials /usr/local/bin/dev-credentials
USER 10001:10001
EXPOSE 50051 50052 50053 9451 9452 9453
CMD ["order-service"]
