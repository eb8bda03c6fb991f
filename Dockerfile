# One image, several entrypoints: every ms2m binary is in /ms2m/ and the
# manager is the default. The chart selects the agent and the replay sidecar
# with `command:`. Static binaries on distroless, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /ms2m/
USER 65532:65532
ENTRYPOINT ["/ms2m/ms2m-manager"]
