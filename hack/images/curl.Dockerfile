# The Helm chart's `helm test` image ("anything with curl and sh"): curlimages/curl
# cannot be pulled without a registry, so hack/build-images.sh builds this one on the
# same Debian base as the project's images (it shares their base layer).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends curl >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
USER 65534:65534
ENTRYPOINT ["curl"]
