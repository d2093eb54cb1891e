"""Every client-visible text of the public contract, in one place.

These strings are byte-compatible with the Prodest ML Stack: existing clients
compare them, so change none without a contract change.
"""

from __future__ import annotations

ROOT_GREETING = "Hey!, ?oirártnoc oa ocsid o odnivuo átse êcov euq rop"
ACCESS_DENIED = "Acesso negado! Verifique as credenciais de acesso."

INFERENCE_METHODS = ["predict", "evaluate", "info"]
MAX_ITEMS = 100
MAX_FEEDBACK_LABELS = 30000
MAX_FEEDBACK_DAYS = 90

MODEL_NOT_FOUND = "O modelo não foi encontrado!"
BROKER_UNREACHABLE = "Não foi possível enviar o job para a fila. Falha ao tentar conectar no servidor de filas"
DB_JOB_CREATE_FAILED = "Não foi possível gerar o job. Erro na conexão com o banco de dados"
FEEDBACK_OK = "Feedback informado com sucesso"


def wrong_method(method: str) -> str:
    return (
        f"O parâmetro 'method' está incorreto. Foi passado '{method}', mas deve ser um desses "
        f"(case sensitive): {INFERENCE_METHODS}"
    )


def missing_param(param: str, method: str) -> str:
    return f"Faltou informar o parâmetro '{param}' na requisição do método '{method}'"


def length_mismatch(method: str) -> str:
    return f"Os parâmetros 'features' e 'targets' do método '{method}' devem ter a mesma quantidade de elementos"


def empty_list(param: str) -> str:
    return f"Foi passada uma lista vazia no parâmetro '{param}'"


def too_many_items(count: int, param: str) -> str:
    return (
        f"A quantidade máxima de itens foi ultrapassada. Foram passados {count} no parâmetro '{param}', "
        f"mas é suportado no máximo {MAX_ITEMS}."
    )


def wrong_param_type(param: str, received: str, expected: str = "list") -> str:
    return f"O tipo do parâmetro '{param}' está incorreto. Foi recebido '{received}', mas deve ser '{expected}'"


def no_workers(model_name: str) -> str:
    return (
        "Não foi possível enviar o job para a fila porque não há workers para processá-lo. "
        f"Verifique se o modelo '{model_name}' está em produção."
    )


def job_id_too_long(job_id: str) -> str:
    return f"O tamanho do 'job_id' {job_id} ultrapassou o limite"


def job_not_found(job_id: str) -> str:
    return f"Não foi possível encontrar o job {job_id}"


def status_db_failed(job_id: str) -> str:
    return f"Não foi possível obter o status do job {job_id}. Erro na conexão com o banco de dados"


def job_expired(ttl_ms: int) -> str:
    return f"Job expirou após {ttl_ms} ms sem ser processado."


def feedback_not_allowed(job_id: str, method: str, status: str) -> str:
    return (
        "Não foi possível informar o feedback. O job não é do método 'predict' e/ou o status não é 'Done'. "
        f"Dados do job {job_id} -> Método: {method}; Status: {status}"
    )


def feedback_count_mismatch(job_id: str) -> str:
    return (
        f"Não foi possível informar o feedback do job {job_id}. A quantidade de labels informada no feedback "
        "não é a mesma da resposta do job"
    )


def feedback_type_mismatch(
    label: object, position: int, label_type: str, predicted: object, predicted_type: str, job_id: str
) -> str:
    return (
        f"O tipo do label '{label}' (posição {position} da lista de feedbacks) é '{label_type}', porém é diferente "
        f"do que foi informado na resposta '{predicted}', que é do tipo '{predicted_type}'. Verifique se todos os "
        f"tipos dos labels informados no feedback são iguais aos da resposta do job {job_id}"
    )


def feedback_db_failed(job_id: str) -> str:
    return f"Não foi possível informar o feedback para o job {job_id}. Erro na conexão com o banco de dados"


def model_interval_not_respected(when: str) -> str:
    return (
        "O intervalo entre feedbacks deste modelo não foi respeitado. "
        f"O próximo feedback poderá ser solicitado {when}"
    )


def _duration(seconds: float) -> str:
    # The contract's text says "2 minutos" (the default); an operator-set interval is stated as set.
    whole = int(seconds)
    if whole == seconds and whole % 60 == 0 and whole >= 60:
        return f"{whole // 60} minuto" if whole == 60 else f"{whole // 60} minutos"
    return f"{seconds:g} segundos"


def global_interval_not_respected(when: str, interval_s: float) -> str:
    return (
        f"O intervalo global de {_duration(interval_s)} entre feedbacks não foi respeitado. "
        f"O próximo feedback poderá ser solicitado {when}"
    )


def bad_initial_date(error: str) -> str:
    return f"A data inicial está inconsistente. Erro reportado: {error}"


def bad_end_date(error: str) -> str:
    return f"A data final está inconsistente. Erro reportado: {error}"


def initial_after_end(initial: str, end: str) -> str:
    return f"A data inicial {initial} é maior que a data final {end}"


def span_too_long(initial: str, end: str, days: int) -> str:
    return (
        f"O intervalo entre as datas {initial} e {end} é de {days} dias, porém o intervalo máximo permitido "
        f"para consulta do feedback é de {MAX_FEEDBACK_DAYS} dias"
    )


def no_feedback_jobs(initial: str, end: str) -> str:
    return (
        f"Não foram encontrados jobs com feedback entre as datas {initial} e {end}. "
        "Escolha outro intervalo de datas e consulte novamente após 30 minutos"
    )


def too_many_feedback_jobs(count: int, initial: str, end: str) -> str:
    return (
        f"Foram encontrados {count} jobs com feedback entre as datas {initial} e {end}. Esta quantidade de jobs "
        f"ultrapassou a quantidade máxima ({MAX_FEEDBACK_LABELS}) permitida para a consulta de feedback. "
        "Escolha um intervalo menor entre datas e consulte novamente após 30 minutos"
    )


def feedback_query_db_failed(model_name: str) -> str:
    return (
        f"Erro ao tentar obter os jobs para realizar o feedback do modelo {model_name}. "
        "Falha na conexão com o banco de dados"
    )


def feedback_additional_info(
    predict_done: int, has_feedback: int, computed: int
) -> str:
    info = ""
    if computed != has_feedback:
        left_out = has_feedback - computed
        info += (
            "Nem todos os jobs que possuem feedback foram processados, pois a quantidade máxima de labels "
            f"({MAX_FEEDBACK_LABELS}) por feedback foi alcançada. Foram deixados {left_out} jobs de fora do "
            f"feedback, perfazendo {left_out / has_feedback * 100:.2f}% dos jobs que tem feedback. "
        )
    share = has_feedback / predict_done * 100 if predict_done else 0.0
    info += (
        f"Dos {predict_done} jobs do método 'predict' que estão com o status 'Done' (concluídos), {has_feedback} "
        f"receberam feedback do usuário, perfazendo {share:.2f}% do total de jobs de 'predict' concluídos"
    )
    return info


# ---- mlstack extensions (api-contract.md, "mlstack extensions"; not in the original) ----
NOT_AUTHENTICATED = "Not authenticated"  # FastAPI's APIKeyHeader answer, kept byte for byte
# Answered by FastAPI's catch-all handler only if something unforeseen fails.
INTERNAL_ERROR = "Erro interno na API"


# 422 for values JSON/BSON cannot carry: FastAPI's English, like its other 422 messages.
INVALID_JSON_VALUE = "Input should be a value JSON and BSON can carry, found {problem}"
LONE_SURROGATE = "a lone surrogate in a string"
INT_OUT_OF_RANGE = "an integer outside the signed 64-bit range"
NOT_FINITE = "NaN or Infinity"
NON_STRING_KEY = "a non-string key"
NUL_IN_KEY = "a NUL character in an object key"


def nested_too_deep(max_depth: int) -> str:
    return f"values nested deeper than {max_depth} levels"


def unsupported_type(type_name: str) -> str:
    return f"a value of type {type_name}"


def body_too_large(max_bytes: int) -> str:
    return f"Request body larger than {max_bytes} bytes"


def queue_full(model_name: str) -> str:
    return f"A fila do modelo '{model_name}' está cheia. Tente novamente em alguns segundos."


def feedback_label_too_large(position: int, size: int, max_bytes: int) -> str:
    return (
        f"O label na posição {position} da lista de feedbacks tem {size} bytes, porém o tamanho máximo "
        f"permitido para um label é de {max_bytes} bytes"
    )


def feedback_message_too_large(initial: str, end: str, max_bytes: int) -> str:
    return (
        f"Os labels dos jobs com feedback entre as datas {initial} e {end} ultrapassaram o tamanho máximo "
        f"({max_bytes} bytes) permitido para a consulta de feedback. Escolha um intervalo menor entre datas "
        "e consulte novamente após 30 minutos"
    )


# Texts a worker reports as a job's response.
def wrong_return_type(method: str, expected: str, got: str) -> str:
    return (
        f"O tipo de retorno do método '{method}' está incorreto. Deve ser '{expected}' ou 'str', "
        f"mas retornou '{got}'"
    )


def wrong_version_type(got: str) -> str:
    return f"O tipo de retorno do método 'get_model_version' está incorreto. Deve ser 'str', mas retornou '{got}'"


def model_raised(model_name: str, exc: BaseException) -> str:
    # The original formats the class as str(type) -> "<class 'ValueError'>"; clients may match on it.
    return f"O modelo '{model_name}' reportou o seguinte erro ao tentar processar o job: {exc.__class__} - {exc}"


def model_not_loaded(model_name: str) -> str:
    return f"O modelo '{model_name}' não foi encontrado!"


# ---- worker failure handling (api-contract.md, mlstack extensions) -------------------------------------------
def worker_cannot_process(reason: str) -> str:
    """A message that can never run: the job ends Error with this response."""
    return f"O job não pôde ser processado pelo worker: {reason}"


def model_time_limit(model_name: str, seconds: float, method: str) -> str:
    return f"O modelo '{model_name}' excedeu o tempo limite de {seconds:g} segundos para executar o método '{method}'"


# Reasons a worker gives for a message it cannot process (the <reason> above; also the dead letter's header).
POISON_NOT_JSON = "a mensagem não é um JSON válido"
POISON_NOT_OBJECT = "a mensagem não é um objeto JSON"


def poison_missing_field(name: str) -> str:
    return f"o campo '{name}' está ausente na mensagem"


def poison_bad_field(name: str, expected: str) -> str:
    return f"o campo '{name}' da mensagem é inválido (esperado: {expected})"


def poison_wrong_queue(model_name: str, queue: str) -> str:
    return f"a mensagem do modelo '{model_name}' chegou à fila '{queue}', de outro modelo"


def result_rejected(status: int) -> str:
    return f"a API recusou o resultado do modelo (HTTP {status})"


def retries_exhausted(reason: str, attempts: int) -> str:
    return f"{reason}; desistiu após {attempts} tentativas"


# ---- POST /cancel (mlstack extension, api-contract.md) -------------------------------------------
CANCEL_OK = "Job cancelado com sucesso"
JOB_CANCELLED = "Job cancelado pelo cliente"


def cannot_cancel(job_id: str, status: str) -> str:
    return f"O job {job_id} não pode mais ser cancelado porque está com status '{status}'"


# ---- operator dashboard --------------------------------------------------------------------------
DASHBOARD_DB_FAILED = "Não foi possível ler os dados do painel. Erro na conexão com o banco de dados"
