# Builds the platform's executables with the same scripts CI runs (completed by the stack issue).
FROM swift:6.0-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/install-deps && swift build -c release --static-swift-stdlib
