"""MLflow compatibility: MLflow's tracking REST API over tether's runs, so an unmodified
``mlflow`` client logs into tether (``tracking``), with MLflow's filter syntax
(``search``)."""
