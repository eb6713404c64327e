"""MLflow compatibility: MLflow's REST API over tether's runs and registry, so an
unmodified ``mlflow`` client logs into tether (``tracking``, ``artifacts``,
``logged_models``, ``registry``, with MLflow's filter syntax in ``search``), and
``tether import mlflow`` (``importer``, reading any MLflow store through ``source``)."""
