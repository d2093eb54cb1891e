"""The client-visible texts of api-contract.md, written out here on purpose.

The suite does not import mlstack.messages: a typo there must fail a test, not
move the expectation along with it.
"""

from __future__ import annotations

from datetime import datetime

GREETING = {"response": "Hey!, ?oirártnoc oa ocsid o odnivuo átse êcov euq rop"}
NOT_AUTHENTICATED = {"detail": "Not authenticated"}
ACCESS_DENIED = {"detail": "Acesso negado! Verifique as credenciais de acesso."}

MODEL_NOT_FOUND = "O modelo não foi encontrado!"
BROKER_DOWN = "Não foi possível enviar o job para a fila. Falha ao tentar conectar no servidor de filas"
DB_DOWN = "Não foi possível gerar o job. Erro na conexão com o banco de dados"
FEEDBACK_OK = {"status": "Done", "response": "Feedback informado com sucesso"}


def error(response: str) -> dict:
    """The short error shape of /inference checks 2-4 and of /feedback's list checks."""
    return {"job_id": "n/a", "status": "Error", "response": response}


def model_error(model_name: str, method: str, response: str) -> dict:
    """The error shape that names the model (model not found, database failure)."""
    return {"job_id": "n/a", "model_name": model_name, "method": method, "status": "Error", "response": response}


def plain_error(response: str) -> dict:
    return {"status": "Error", "response": response}


def wrong_method(method: str) -> str:
    return (
        f"O parâmetro 'method' está incorreto. Foi passado '{method}', mas deve ser um desses "
        "(case sensitive): ['predict', 'evaluate', 'info']"
    )


def missing(param: str, method: str) -> str:
    return f"Faltou informar o parâmetro '{param}' na requisição do método '{method}'"


LENGTH_MISMATCH = "Os parâmetros 'features' e 'targets' do método 'evaluate' devem ter a mesma quantidade de elementos"


def empty_list(param: str) -> str:
    return f"Foi passada uma lista vazia no parâmetro '{param}'"


def too_many(n: int, param: str) -> str:
    return (
        f"A quantidade máxima de itens foi ultrapassada. Foram passados {n} no parâmetro '{param}', "
        "mas é suportado no máximo 100."
    )


def none_type(param: str) -> str:
    return f"O tipo do parâmetro '{param}' está incorreto. Foi recebido 'NoneType', mas deve ser 'list'"


def no_workers(model_name: str) -> str:
    return (
        "Não foi possível enviar o job para a fila porque não há workers para processá-lo. "
        f"Verifique se o modelo '{model_name}' está em produção."
    )


def job_id_too_long(job_id: str) -> str:
    return f"O tamanho do 'job_id' {job_id} ultrapassou o limite"


def job_not_found(job_id: str) -> str:
    return f"Não foi possível encontrar o job {job_id}"


def expired(ttl_ms: int) -> str:
    return f"Job expirou após {ttl_ms} ms sem ser processado."


def wrong_return_type(method: str, expected: str, got: str) -> str:
    return (
        f"O tipo de retorno do método '{method}' está incorreto. Deve ser '{expected}' ou 'str', mas retornou '{got}'"
    )


def model_raised(model_name: str, exc_class: str, message: str) -> str:
    return (
        f"O modelo '{model_name}' reportou o seguinte erro ao tentar processar o job: <class '{exc_class}'> - {message}"
    )


def feedback_not_allowed(job_id: str, method: str, status: str) -> str:
    return (
        "Não foi possível informar o feedback. O job não é do método 'predict' e/ou o status não é 'Done'. "
        f"Dados do job {job_id} -> Método: {method}; Status: {status}"
    )


def feedback_count_mismatch(job_id: str) -> str:
    return (
        f"Não foi possível informar o feedback do job {job_id}. A quantidade de labels informada no "
        "feedback não é a mesma da resposta do job"
    )


def feedback_type_mismatch(
    label: str, position: int, label_type: str, predicted: str, predicted_type: str, job_id: str
) -> str:
    return (
        f"O tipo do label '{label}' (posição {position} da lista de feedbacks) é '{label_type}', porém é "
        f"diferente do que foi informado na resposta '{predicted}', que é do tipo '{predicted_type}'. "
        "Verifique se todos os tipos dos labels informados no feedback são iguais aos da resposta do job "
        f"{job_id}"
    )


# -- get_feedback ---------------------------------------------------------------------------------
def gf_error(model_name: str, response: str) -> dict:
    return model_error(model_name, "get_feedback", response)


def bad_initial_date(err: str) -> str:
    return f"A data inicial está inconsistente. Erro reportado: {err}"


def bad_end_date(err: str) -> str:
    return f"A data final está inconsistente. Erro reportado: {err}"


def initial_after_end(initial: str, end: str) -> str:
    return f"A data inicial {initial} é maior que a data final {end}"


def span_too_long(initial: str, end: str, days: int) -> str:
    return (
        f"O intervalo entre as datas {initial} e {end} é de {days} dias, porém o intervalo máximo "
        "permitido para consulta do feedback é de 90 dias"
    )


def nothing_found(initial: str, end: str) -> str:
    return (
        f"Não foram encontrados jobs com feedback entre as datas {initial} e {end}. Escolha outro "
        "intervalo de datas e consulte novamente após 30 minutos"
    )


MODEL_LIMIT_PREFIX = (
    "O intervalo entre feedbacks deste modelo não foi respeitado. O próximo feedback poderá ser solicitado "
)
# The contract's text names the default interval, 2 minutes; a stack configured otherwise states its own
# interval (the tests run with a few seconds) — test_contract_texts.py pins the default text.
GLOBAL_LIMIT_PREFIX = (
    "O intervalo global de 2 minutos entre feedbacks não foi respeitado. O próximo feedback poderá ser solicitado "
)


def global_limit_prefix(interval_text: str = "2 minutos") -> str:
    return GLOBAL_LIMIT_PREFIX.replace("2 minutos", interval_text)


def when(epoch: float) -> str:
    """`dia DD/MM/YYYY a partir das HH:MM:SS hs`, local time of the API host (this host)."""
    return datetime.fromtimestamp(epoch).strftime("dia %d/%m/%Y a partir das %H:%M:%S hs")


def additional_info(predict_done: int, has_feedback: int) -> str:
    """The original's sentence when every job with feedback was computed."""
    return (
        f"Dos {predict_done} jobs do método 'predict' que estão com o status 'Done' (concluídos), "
        f"{has_feedback} receberam feedback do usuário, perfazendo {has_feedback / predict_done * 100:.2f}% "
        "do total de jobs de 'predict' concluídos"
    )


STATUS_KEYS = {
    "job_id", "model_name", "model_version", "method", "status", "datetime",
    "queue_response_time_sec", "total_response_time_sec", "response",
}  # fmt: skip
PREDICT_STATUS_KEYS = STATUS_KEYS | {"feedback", "has_feedback"}
GET_FEEDBACK_STATUS_KEYS = STATUS_KEYS | {"initial_date", "end_date", "request_source"}
API_METRICS_KEYS = {
    "feedback_labels_types", "qty_computed_labels", "total_jobs_predict_done",
    "total_jobs_has_feedback", "total_jobs_computed_feedback", "additional_info",
}  # fmt: skip


# ---- mlstack extensions: worker failure handling ---------------------------------------------
WORKER_CANNOT_PROCESS_PREFIX = "O job não pôde ser processado pelo worker: "


def model_time_limit(model_name: str, seconds: str, method: str) -> str:
    return f"O modelo '{model_name}' excedeu o tempo limite de {seconds} segundos para executar o método '{method}'"
