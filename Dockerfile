# One image for Nudge: the worker by default, the HTTP service with `nudge serve`,
# migrations with `nudge db upgrade` (docker-compose.yml runs all three from it).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 nudge \
    && useradd --system --uid 10001 --gid nudge --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin nudge

WORKDIR /app

# Dependencies first, at the versions constraints.txt pins: this layer is rebuilt only
# when pyproject.toml or constraints.txt change, not on every source edit.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The source, path by path (never `COPY . .`: that would bake .env, .venv and .nudge in).
# Keep this list in step with [tool.setuptools] in pyproject.toml; tests/test_compose.py checks it.
COPY settings.py cli.py worker.py temporal_client.py payload_codec.py links.py service.py dependencies.py automation_starts.py followup_schedules.py ./
COPY domain/ domain/
COPY workflows/ workflows/
COPY activities/ activities/
COPY integrations/ integrations/
COPY store/ store/
COPY starter/ starter/
COPY api/ api/
RUN pip install --no-cache-dir -c constraints.txt . \
    && mkdir -p /app/.nudge \
    && chown nudge:nudge /app/.nudge

USER nudge
EXPOSE 8000
# Python turns SIGINT into a clean shutdown (the worker drains, uvicorn stops); SIGTERM
# would be ignored by a process running as PID 1 without a handler.
STOPSIGNAL SIGINT
CMD ["nudge", "worker"]
