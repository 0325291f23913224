# snap as the entrypoint of a sada-sliding container: restore on start, back
# up on a schedule and before stopping. See docs/container.md.
#
# This image holds snap only. Build it, then your own image on top of it
# with the server (and whatever libraries the server needs):
#
#   docker build -t snap .
#
#   FROM snap
#   COPY sada-sliding /usr/local/bin/sada-sliding
#
# The default command runs /usr/local/bin/sada-sliding on port 9015 with its
# database in /data.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# snap needs no cgo (only the test server does): a static binary.
RUN CGO_ENABLED=0 go build -tags disable_grpc_modules -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/snap ./cmd/snap

FROM ubuntu:24.04
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/snap /usr/local/bin/snap
RUN mkdir -p /data
VOLUME /data
# snap is PID 1: it gets docker stop's SIGTERM, takes the final backup and
# then passes the signal to the server.
STOPSIGNAL SIGTERM
ENTRYPOINT ["snap", "run"]
CMD ["--", "/usr/local/bin/sada-sliding", "--port", "9015", "--rocksdb_db_path", "/data", \
     "--rocksdb_create_if_missing_one_off", "--version_timestamp_ms", "9999999999999"]
