# syntax=docker/dockerfile:1
# team-operator image: /usr/local/bin/team-operator (controller, gateway, crd),
# /usr/local/bin/teamctl, and /teamctl, which the member pods' init container runs as
# `/teamctl install DIR`. Build: see README, "Install with Helm".

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Smaller binaries: no debug symbols in the image. Statically linked (glibc crt-static, as
# hack/lib.sh builds them): /teamctl is copied into agent images of any libc. With `--target`
# (the build's own arch, so multi-arch builds work) RUSTFLAGS reach only the target's crates,
# and build scripts and proc macros stay dynamic.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    RUSTFLAGS="-C target-feature=+crt-static"
# Manifests first, with stub sources, so the dependency layer is reused while only src/ changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/teamctl.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --target "$(uname -m)-unknown-linux-gnu" \
 && rm -rf src
COPY src ./src
# Touch so cargo rebuilds the crate over the stubs' artifacts.
RUN touch src/main.rs src/lib.rs src/bin/teamctl.rs \
 && out="target/$(uname -m)-unknown-linux-gnu/release" \
 && cargo build --release --locked --target "$(uname -m)-unknown-linux-gnu" --bin team-operator --bin teamctl \
 && install -D -m 0755 "$out"/team-operator /out/usr/local/bin/team-operator \
 && install -D -m 0755 "$out"/teamctl /out/usr/local/bin/teamctl \
 && install -D -m 0755 "$out"/teamctl /out/teamctl

# --- runtime -------------------------------------------------------------------------------
# CA certificates and nothing else (no shell; the binaries are static); runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/team-operator"]
CMD ["controller"]
