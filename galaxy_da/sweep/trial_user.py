"""Trials log to MLflow as a user of their own, with EDIT on the sweep's experiment, never as the admin.

On a cluster's tracking server behind MLflow's basic-auth app, the sweep's
driver holds the credentials it was started with (``MLFLOW_TRACKING_USERNAME``
/ ``MLFLOW_TRACKING_PASSWORD``, on the head). When that user is an admin, the
driver creates (or, on ``--resume``, re-keys) the user
``galaxy-da-trials-<experiment id>-<sweep name>`` with a fresh random password,
grants it ``EDIT`` on the sweep's experiment and hands only that user's
credentials to the trials (:func:`enter_trial_environment`). ``EDIT`` lets a
trial create runs in that experiment, log to them and tag or close them; it
cannot delete runs or experiments, nor write to any other experiment (MLflow's
basic-auth app still lets any user *create* a new experiment while workspaces
are off; that gives it nothing over the existing ones).

A driver that is not an admin passes its own credentials on; a server without
the auth app, or a driver without credentials, passes none.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Optional

USER_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"
EDIT = "EDIT"


def trial_username(experiment_id: str, sweep_name: str) -> str:
    """The MLflow user a sweep's trials log as: one per sweep and experiment."""
    return f"galaxy-da-trials-{experiment_id}-{re.sub(r'[^A-Za-z0-9_.-]', '_', sweep_name)}"


def current_user(tracking_uri: str) -> Optional[dict]:
    """The basic-auth app's record of the user in this environment (``is_admin``, ...); ``None`` if the server has no auth app."""
    from mlflow.server.auth.routes import GET_USER
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(get_default_host_creds(tracking_uri), GET_USER, "GET", params={"username": os.environ[USER_VARIABLE]})
    if response.status_code == 404:
        return None
    return verify_rest_response(response, GET_USER).json()["user"]


def _created(call, *args) -> bool:
    """``call(*args)``; ``False`` if what it creates exists already (a resumed sweep)."""
    from mlflow.exceptions import MlflowException

    try:
        call(*args)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


def trial_credentials(tracking_uri: str, experiment_id: str, sweep_name: str) -> dict[str, str]:
    """The ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` a sweep's trials get (see the module docstring); ``{}``: none."""
    if not os.environ.get(USER_VARIABLE) or not tracking_uri.startswith(("http://", "https://")):
        return {}
    own = {USER_VARIABLE: os.environ[USER_VARIABLE], PASSWORD_VARIABLE: os.environ.get(PASSWORD_VARIABLE, "")}
    user = current_user(tracking_uri)
    if user is None or not user["is_admin"]:
        return own
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    name, fresh_key = trial_username(experiment_id, sweep_name), secrets.token_urlsafe(24)
    if not _created(auth.create_user, name, fresh_key):
        auth.update_user_password(name, fresh_key)  # the previous run's trials are gone: a fresh key
    _created(auth.grant_user_permission, name, "experiment", experiment_id, EDIT)
    return {USER_VARIABLE: name, PASSWORD_VARIABLE: fresh_key}


def enter_trial_environment(tracking_uri: str, credentials: dict[str, str]) -> None:
    """Point this trial process at the sweep's server with ``credentials`` only: any MLflow user inherited from the node goes."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    for key in (USER_VARIABLE, PASSWORD_VARIABLE):
        os.environ.pop(key, None)
    os.environ.update(credentials)
