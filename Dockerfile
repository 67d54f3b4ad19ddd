# The trading image: `trading worker` (default) or `trading api`; see compose.yaml.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain domain
COPY contracts contracts
COPY activities activities
COPY workflows workflows
COPY bootstrap bootstrap
COPY worker worker
COPY api api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 trading
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER trading
WORKDIR /home/trading
ENV PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    DATA_DIR=/home/trading/.trading
ENTRYPOINT ["trading"]
CMD ["worker"]
