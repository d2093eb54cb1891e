"""Request examples shown in Swagger UI (/docs)."""

from __future__ import annotations

from typing import Any

INFERENCE: dict[str, Any] = {
    "predict": {
        "summary": "Exemplo de predict",
        "description": "Predição de itens separados por ';'. Máximo de 100 itens.",
        "value": {"model_name": "CLF_IRIS", "features": ["5.1;3.5;1.4;0.2"], "method": "predict"},
    },
    "info": {
        "summary": "Exemplo de info",
        "description": "Informações sobre um modelo publicado.",
        "value": {"model_name": "CLF_IRIS", "method": "info"},
    },
    "evaluate": {
        "summary": "Exemplo de avaliação do modelo",
        "description": "Avaliação com features e targets correspondentes. Máximo de 100 itens cada.",
        "value": {
            "model_name": "CLF_IRIS",
            "features": ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"],
            "targets": ["setosa", "virginica"],
            "method": "evaluate",
        },
    },
}

STATUS: dict[str, Any] = {
    "status": {
        "summary": "Exemplo de solicitação de status",
        "description": "Status possíveis: 'Queued', 'Running', 'Done' e 'Error' (a resposta vem em 'response').",
        "value": {"job_id": "COLE_AQUI_O_JOB_ID"},
    }
}

FEEDBACK: dict[str, Any] = {
    "feedback": {
        "summary": "Exemplo de feedback",
        "description": "Mesma quantidade e tipos de labels da resposta do job de predict. Máximo de 100 itens.",
        "value": {"job_id": "COLE_AQUI_O_JOB_ID", "feedback": ["setosa"]},
    }
}

GET_FEEDBACK: dict[str, Any] = {
    "get_feedback": {
        "summary": "Exemplo de solicitação de feedback",
        "description": "Intervalo máximo de 90 dias; 30 minutos entre pedidos do mesmo modelo, "
        "2 minutos entre modelos.",
        "value": {"model_name": "CLF_IRIS", "initial_date": "dd/mm/yyyy", "end_date": "dd/mm/yyyy"},
    }
}

CANCEL: dict[str, Any] = {
    "cancel": {
        "summary": "Cancelar um job que ainda está na fila",
        "description": "Só um job com status 'Queued' pode ser cancelado; ele nunca será executado e o "
        "/status passa a mostrar 'Error' com a resposta 'Job cancelado pelo cliente'.",
        "value": {"job_id": "COLE_AQUI_O_JOB_ID"},
    }
}
