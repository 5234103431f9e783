# syntax=docker/dockerfile:1
# ecs-operator image: build with the Rust toolchain, run on distroless as non-root.
# CI runs the same `cargo build --release --locked` outside Docker (make release).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys builds with the C compiler the image already has.
COPY . .
RUN cargo build --release --locked -p ecs-operator \
    && cp target/release/ecs-operator /ecs-operator

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ecs-operator" \
      org.opencontainers.image.description="Kubernetes operator that makes Amazon ECS declarative" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/ecs-operator"
COPY --from=build /ecs-operator /usr/local/bin/ecs-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ecs-operator"]
CMD ["run"]
