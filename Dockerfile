# The `deva` command in an image, for cluster runs (deploy/kubernetes, deploy/slurm).
#   docker build -t deva .                              # CPU build
#   docker build -t deva-cuda --build-arg FEATURES=cuda \
#       --build-arg BUILD_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04 .   # needs a Rust toolchain there too
# Datasets, outputs and model weights are mounted, not baked in: /data, /results, /models.
ARG BUILD_IMAGE=rust:1.89-bookworm
ARG RUN_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG FEATURES=""
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY models models
RUN cargo build --release --locked --bin deva ${FEATURES:+--features $FEATURES} \
    && cp target/release/deva /usr/local/bin/deva

FROM ${RUN_IMAGE}
# ffmpeg decodes video-file inputs and writes overlay videos.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/deva /usr/local/bin/deva
COPY configs /opt/deva/configs
ENV DEVA_MODELS=/models
ENTRYPOINT ["deva"]
CMD ["--help"]
