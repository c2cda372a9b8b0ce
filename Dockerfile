# syntax=docker/dockerfile:1
# team-operator image: /usr/local/bin/team-operator (controller, gateway, crd),
# /usr/local/bin/teamctl, and /teamctl, which the member pods' init container runs as
# `/teamctl install DIR`. Build: see README, "Install with Helm".

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Smaller binaries: no debug symbols in the image. Statically linked (glibc crt-static, as
# hack/lib.sh builds them): /teamctl is copied into agent images of any libc. `--target` keeps
# build scripts and proc macros dynamic.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
# Manifests first, with stub sources, so the dependency layer is reused while only src/ changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/teamctl.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# Touch so cargo rebuilds the crate over the stubs' artifacts.
RUN touch src/main.rs src/lib.rs src/bin/teamctl.rs \
 && cargo build --release --locked --bin team-operator --bin teamctl \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/team-operator /out/usr/local/bin/team-operator \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/teamctl /out/usr/local/bin/teamctl \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/teamctl /out/teamctl

# --- runtime -------------------------------------------------------------------------------
# CA certificates and nothing else (no shell; the binaries are static); runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/team-operator"]
CMD ["controller"]
