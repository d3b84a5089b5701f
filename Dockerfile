# syntax=docker/dockerfile:1
# authwatch as a static binary on a distroless base that runs as non-root:
#   docker build -t authwatch:dev .
# The build stage runs `make build`, the command CI runs, with cgo off so
# that the binary needs no C library.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so that a source change reuses the downloaded modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOFLAGS=-trimpath make build

# distroless/static has no shell and no package manager; its nonroot tag
# runs as UID 65532, the user that the manifests' securityContext names.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/authwatch /usr/local/bin/authwatch
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/authwatch"]
CMD ["run", "--config=/etc/authwatch/config/config.yaml", "--listen-address=:8080"]
