# llm-proxy as a container image: the static binary and nothing else.
#
#   scripts/build-static.sh
#   docker build -t llm-proxy .
#   docker run --rm -p 8000:8000 -e OPENAI_API_KEY \
#       -v "$PWD/config.yaml:/etc/llm-proxy/config.yaml:ro" llm-proxy
#
# FROM scratch: no shell, no libc, no package manager. The binary is static
# (scripts/build-static.sh), its TLS roots are compiled in (webpki-roots), and
# Docker supplies /etc/hosts and /etc/resolv.conf, which static getaddrinfo
# reads. Nothing is downloaded while building, so it builds offline.
#
# The build context is only the binary and config/config.yaml (.dockerignore).
# scripts/build-static.sh uses the musl target when it is installed: then
#   docker build --build-arg BINARY=target/x86_64-unknown-linux-musl/release/llm-proxy .
FROM scratch

ARG BINARY=target/x86_64-unknown-linux-gnu/release/llm-proxy

COPY ${BINARY} /usr/local/bin/llm-proxy
# The annotated example, so the image starts with only its variables set;
# mount your own config over it (read-only is enough).
COPY config/config.yaml /etc/llm-proxy/config.yaml

# A numeric non-root user and group (65532, "nonroot" in distroless images):
# scratch has no /etc/passwd, and a number needs none. A mounted config must
# be readable by it (mode 0644, or owned by 65532).
USER 65532:65532

# SIGTERM is what `docker stop` sends: the proxy stops accepting, finishes
# the requests in flight (server.shutdown_timeout), and exits 0. Give
# `docker stop` a longer grace period than that (-t, compose
# stop_grace_period), or Docker kills it at 10 s.
STOPSIGNAL SIGTERM
EXPOSE 8000

ENTRYPOINT ["/usr/local/bin/llm-proxy", "--config", "/etc/llm-proxy/config.yaml"]
# Inside the container it listens on every interface; publish the port to
# choose who can reach it (-p 127.0.0.1:8000:8000 for this host only).
CMD ["--host", "0.0.0.0", "--port", "8000"]
