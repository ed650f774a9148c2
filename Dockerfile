# syntax=docker/dockerfile:1
# The MQTT server as a static binary on distroless, running as a non-root user.
#   docker build -t bridgemq .
#   docker run -p 1883:1883 -p 8080:8080 bridgemq                      # one node, no Redis
#   docker run ... bridgemq -redis-url redis://redis:6379 -node-id a     # a replica
# Every flag can also be given as an MQTT_* environment variable (see -h).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/bridgemq .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridgemq /bridgemq
USER nonroot:nonroot
# MQTT, and HTTP for /healthz, /readyz and /metrics.
EXPOSE 1883 8080
ENTRYPOINT ["/bridgemq"]
