# Production image for the staff SSO service (web API, Temporal worker, CLI).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged runtime user (fixed uid/gid so volume permissions are predictable).
RUN groupadd --system --gid 10001 sso \
 && useradd --system --uid 10001 --gid sso --home-dir /app --no-create-home --shell /usr/sbin/nologin sso

WORKDIR /app

# Project metadata first (README.md is optional: the glob keeps COPY from
# failing when it is absent), then the source packages and modules.
COPY pyproject.toml README.m[d] ./
COPY core/ ./core/
COPY workflows/ ./workflows/
COPY activities/ ./activities/
COPY api/ ./api/
COPY templates/ ./templates/
COPY worker.py cli.py ./

# Editable install: templates/ and the migrations are read from /app, not site-packages.
# Install the project (and its console script `sso`) as root, then make sure
# the script is really there so a broken entry point fails the build.
RUN pip install --no-cache-dir -e . \
 && command -v sso

USER sso

EXPOSE 8000

CMD ["sso", "api", "--host", "0.0.0.0", "--port", "8000"]
