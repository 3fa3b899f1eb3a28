# One image for the worker (default) and the HTTP service (`nudge serve`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 nudge
WORKDIR /app

# Dependencies first, pinned by constraints.txt, so source edits reuse this layer.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p workflows activities integrations store starter api \
    && for d in workflows activities integrations store starter api; do touch $d/__init__.py; done \
    && touch cli.py settings.py worker.py temporal_client.py \
    && pip install --no-cache-dir -c constraints.txt . \
    && pip uninstall -y nudge

COPY . .
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && mkdir -p /app/.nudge && chown -R nudge /app/.nudge

USER nudge
EXPOSE 8000
CMD ["nudge", "worker"]
