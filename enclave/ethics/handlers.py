"""Request handlers of the ethics service's pages.

Every page needs a hub login (``HubOAuthenticated``); roles come from the
user's hub groups. Every form is protected by the hub's XSRF token, and all
user text is escaped by the templates. A decision runs in one catalog
transaction, so a rejected form stores nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy.exc
import sqlalchemy.orm.exc
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from sqlalchemy.orm import Session
from tornado import locale, web

from enclave.errors import (
    AuditUnavailable,
    EnclaveError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from enclave.ethics import views, workflow
from enclave.ethics.agreement import current_agreement
from enclave.ethics.forms import (
    DEID_PROFILES,
    FIELD_LABELS,
    USE_SCENES,
    FormInvalid,
    parse_amendment,
    parse_application,
)
from enclave.ethics.labels import (
    AMENDMENT_STATUS_LABELS,
    CAUSE_MESSAGES,
    DECISION_LABELS,
    STATUS_LABELS,
)
from enclave.ethics.notices import dismiss_notice

if TYPE_CHECKING:
    from enclave.ethics.app import EthicsContext

__all__ = ["ROUTES", "choose_locale"]

log = logging.getLogger(__name__)

COMMITTEE_GROUP = "ethics-committee"
ADMIN_GROUP = "security-admins"

INLINE_STYLE = (
    ".ethics-text { white-space: pre-wrap; }\n"
    ".ethics-agreement { white-space: pre-wrap; max-height: 28rem; overflow-y: auto; }"
)
"""The page's own few style rules, next to the hub's style sheet."""
_INLINE_STYLE_HASH = base64.b64encode(
    hashlib.sha256(INLINE_STYLE.encode("utf-8")).digest()
).decode("ascii")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    f"style-src 'self' 'sha256-{_INLINE_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'self'"
)
"""No script at all, and only the hub's style sheet and :data:`INLINE_STYLE`."""
T = TypeVar("T")


def choose_locale(accept_language: str | None) -> locale.Locale:
    """Return Chinese for a browser that prefers any Chinese, else English."""
    ranked = []
    for index, part in enumerate((accept_language or "").split(",")):
        code, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, code.strip().lower()))
    for _, _, code in sorted(ranked):
        if code.startswith("zh"):
            return locale.get("zh_CN")
        if code.startswith("en"):
            break
    return locale.get("en_US")


def form_arguments(handler: web.RequestHandler) -> dict[str, list[str]]:
    """Return the decoded fields of a posted form."""
    return {
        name: [value.decode("utf-8", "replace") for value in values]
        for name, values in handler.request.body_arguments.items()
    }


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Identity, roles, language, error pages and transactions of every page."""

    def initialize(self, context: EthicsContext) -> None:
        self.context = context
        self.hub_auth = context.hub_auth

    def set_default_headers(self) -> None:
        # The pages need no script at all, so a policy that forbids scripts
        # stops injected markup even if escaping were ever missed.
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")

    def get_user_locale(self) -> locale.Locale:
        return choose_locale(self.request.headers.get("Accept-Language"))

    @property
    def viewer(self) -> views.Viewer:
        model = self.current_user
        groups = frozenset(model.get("groups") or ())
        return views.Viewer(
            name=model["name"],
            groups=groups,
            committee=COMMITTEE_GROUP in groups,
            security_admin=ADMIN_GROUP in groups,
        )

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            prefix=self.context.prefix,
            hub_prefix=self.hub_auth.hub_prefix,
            inline_style=INLINE_STYLE,
            html_lang="zh-CN" if self.locale.code == "zh_CN" else "en",
            viewer=self.viewer if self.current_user else None,
            status_labels=STATUS_LABELS,
            decision_labels=DECISION_LABELS,
            amendment_status_labels=AMENDMENT_STATUS_LABELS,
            cause_messages=CAUSE_MESSAGES,
            scene_labels=USE_SCENES,
            profile_labels=DEID_PROFILES,
            field_labels=FIELD_LABELS,
            render_error=lambda error: error.render(self.locale.translate),
        )
        return namespace

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = None
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], web.HTTPError) and status_code < 500:
            message = exc_info[1].log_message
        self.render(
            "error.html",
            status_code=status_code,
            reason=self._reason,
            message=message,
        )

    @contextmanager
    def decision(self) -> Any:
        """Open a write transaction and turn the package's errors into HTTP errors."""
        try:
            with self.context.catalog.session(immediate=True) as session:
                yield session
        except FormInvalid:
            raise
        except PermissionDenied as exc:
            raise web.HTTPError(403, str(exc)) from exc
        except NotFound as exc:
            raise web.HTTPError(404, str(exc)) from exc
        except workflow.DecisionConflict as exc:
            raise web.HTTPError(409, str(exc)) from exc
        except ValidationError as exc:
            raise web.HTTPError(400, str(exc)) from exc
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.orm.exc.StaleDataError,
        ) as exc:
            # A concurrent decision won the race: a unique name was taken or
            # the project's version changed between reading and writing.
            log.warning("decision lost a race: %s", type(exc).__name__)
            raise web.HTTPError(
                409,
                "another change was saved at the same time; reload the page and "
                "try again",
            ) from exc
        except AuditUnavailable as exc:
            log.error("decision not taken, audit trail unavailable: %s", exc)
            raise web.HTTPError(503, str(exc)) from exc
        except EnclaveError as exc:
            log.error("decision failed: %s", exc)
            raise web.HTTPError(500, str(exc)) from exc

    def read(self, function: Callable[[Session], T]) -> T:
        """Run a read-only ``function`` in a session, turning NotFound into 404."""
        try:
            with self.context.catalog.session() as session:
                return function(session)
        except NotFound as exc:
            raise web.HTTPError(404, str(exc)) from exc

    def reject(self, action: str, project: str | None, reason: str) -> None:
        """Record a rejected request in the audit trail and raise HTTP 403."""
        try:
            self.context.audit.append(
                actor=self.viewer.name,
                action=action,
                outcome="denied",
                source="ethics",
                project=project,
                detail={"reason": reason},
            )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.orm.exc.StaleDataError,
        ) as exc:
            # A concurrent decision won the race: a unique name was taken or
            # the project's version changed between reading and writing.
            log.warning("decision lost a race: %s", type(exc).__name__)
            raise web.HTTPError(
                409,
                "another change was saved at the same time; reload the page and "
                "try again",
            ) from exc
        except AuditUnavailable as exc:
            raise web.HTTPError(503, str(exc)) from exc
        log.warning("rejected %s by %s: %s", action, self.viewer.name, reason)
        raise web.HTTPError(403, reason)

    def project_url(self, name: str) -> str:
        return f"{self.context.prefix}projects/{name}"

    def version_argument(self) -> int | None:
        raw = self.get_body_argument("version", "")
        try:
            return int(raw) if raw else None
        except ValueError:
            raise web.HTTPError(
                400, f"invalid version {raw!r}; reload the page"
            ) from None

    def project_page(self, name: str) -> views.ProjectView:
        view = self.read(lambda s: views.project_view(s, name, self.viewer))
        if view is None:
            # Not 403: a user outside the project learns nothing about it.
            raise web.HTTPError(404, f"project {name!r} not found")
        return view


class IndexHandler(BaseHandler):
    @web.authenticated
    def get(self) -> None:
        def load(session: Session) -> tuple[Any, Any]:
            return (
                views.list_projects_for(session, self.viewer),
                views.list_notices(session, self.viewer.name),
            )

        lists, notices = self.read(load)
        self.render("index.html", lists=lists, notices=notices)


class ApplyHandler(BaseHandler):
    def _render_form(self, values: dict[str, Any], errors: list[Any]) -> None:
        datasets = self.read(views.list_datasets)
        self.render(
            "apply.html",
            values=values,
            errors=errors,
            datasets=datasets,
            action=f"{self.context.prefix}apply",
            project=None,
        )

    @web.authenticated
    def get(self) -> None:
        today = dt.date.today()
        self._render_form(
            {
                "members": [self.viewer.name],
                "principal_investigator": [self.viewer.name],
                "starts_on": [today.isoformat()],
                "deid_profile": ["baseline"],
            },
            [],
        )

    @web.authenticated
    def post(self) -> None:
        arguments = form_arguments(self)
        try:
            with self.decision() as session:
                known = [d.name for d in views.list_datasets(session)]
                application = parse_application(arguments, known_datasets=known)
                workflow.apply(
                    session, self.context.audit, application, applicant=self.viewer.name
                )
        except FormInvalid as exc:
            self.set_status(400)
            self._render_form(arguments, exc.errors)
            return
        self.redirect(self.project_url(application.name))


class EditHandler(BaseHandler):
    """Changes an application the committee sent back, and resubmits it."""

    def _render_form(
        self, view: views.ProjectView, values: dict[str, Any], errors: list[Any]
    ) -> None:
        datasets = self.read(views.list_datasets)
        self.render(
            "apply.html",
            values=values,
            errors=errors,
            datasets=datasets,
            action=f"{self.project_url(view.name)}/edit",
            project=view,
        )

    @web.authenticated
    def get(self, name: str) -> None:
        view = self.project_page(name)
        if not view.viewer_may_edit:
            raise web.HTTPError(
                403, "only the applicant or PI changes an application sent back"
            )
        values = {
            "name": [view.name],
            "title": [view.title],
            "principal_investigator": [view.principal_investigator],
            "use_scene": [view.use_scene],
            "summary": [view.summary],
            "deid_profile": [view.deid_profile],
            "datasets": [d.name for d in view.datasets],
            "members": [", ".join(m for m in view.members)],
            "starts_on": [view.starts_on.isoformat()],
            "ends_on": [view.ends_on.isoformat()],
            "ethics_ref": [view.ethics_ref],
            "consent_basis": [view.consent_basis],
        }
        self._render_form(view, values, [])

    @web.authenticated
    def post(self, name: str) -> None:
        view = self.project_page(name)
        arguments = form_arguments(self)
        arguments["name"] = [name]
        try:
            with self.decision() as session:
                known = [d.name for d in views.list_datasets(session)]
                application = parse_application(arguments, known_datasets=known)
                workflow.resubmit(
                    session,
                    self.context.audit,
                    name,
                    application,
                    applicant=self.viewer.name,
                    expected_version=self.version_argument(),
                )
        except FormInvalid as exc:
            self.set_status(400)
            self._render_form(view, arguments, exc.errors)
            return
        self.redirect(self.project_url(name))


class ProjectHandler(BaseHandler):
    @web.authenticated
    def get(self, name: str) -> None:
        self.render("project.html", project=self.project_page(name))


class ReviewHandler(BaseHandler):
    """Records a committee member's decision on an application or an amendment."""

    @web.authenticated
    def post(self, name: str, amendment_id: str | None = None) -> None:
        self.project_page(name)
        if not self.viewer.committee:
            self.reject(
                "project.review",
                name,
                f"{self.viewer.name!r} is not in the {COMMITTEE_GROUP!r} group; only "
                "ethics committee members review projects",
            )
        arguments = {
            "reviewer": self.viewer.name,
            "decision": self.get_body_argument("decision", ""),
            "conditions": self.get_body_argument("conditions", ""),
            "comment": self.get_body_argument("comment", ""),
            "expected_version": self.version_argument(),
        }
        with self.decision() as session:
            if amendment_id is None:
                workflow.review_application(
                    session, self.context.audit, name, **arguments
                )
            else:
                workflow.review_amendment(
                    session, self.context.audit, name, int(amendment_id), **arguments
                )
        self.redirect(self.project_url(name))


class AmendHandler(BaseHandler):
    def _render_form(
        self, view: views.ProjectView, values: dict[str, Any], errors: list[Any]
    ) -> None:
        datasets = self.read(views.list_datasets)
        self.render(
            "amend.html", project=view, values=values, errors=errors, datasets=datasets
        )

    @web.authenticated
    def get(self, name: str) -> None:
        view = self.project_page(name)
        if not view.viewer_may_amend:
            raise web.HTTPError(
                403,
                "only members of an approved project without a pending amendment "
                "ask for an amendment",
            )
        self._render_form(view, {}, [])

    @web.authenticated
    def post(self, name: str) -> None:
        view = self.project_page(name)
        arguments = form_arguments(self)
        try:
            with self.decision() as session:
                known = [d.name for d in views.list_datasets(session)]
                request = parse_amendment(
                    arguments, known_datasets=known, current_ends_on=view.ends_on
                )
                workflow.submit_amendment(
                    session,
                    self.context.audit,
                    name,
                    request,
                    requested_by=self.viewer.name,
                )
        except FormInvalid as exc:
            self.set_status(400)
            self._render_form(view, arguments, exc.errors)
            return
        self.redirect(self.project_url(name))


class WithdrawHandler(BaseHandler):
    @web.authenticated
    def post(self, name: str, amendment_id: str) -> None:
        self.project_page(name)
        with self.decision() as session:
            workflow.withdraw_amendment(
                session,
                self.context.audit,
                name,
                int(amendment_id),
                actor=self.viewer.name,
            )
        self.redirect(self.project_url(name))


class AgreementHandler(BaseHandler):
    """Shows the data use agreement in the reader's language and records acceptance."""

    @web.authenticated
    def get(self, name: str) -> None:
        view = self.project_page(name)
        agreement = current_agreement()
        language = agreement.language_for(self.locale.code)
        self.render(
            "agreement.html",
            project=view,
            agreement=agreement,
            language=language,
            text=agreement.text(language),
            sha256=agreement.sha256(language),
        )

    @web.authenticated
    def post(self, name: str) -> None:
        self.project_page(name)
        if self.get_body_argument("accept", "") != "yes":
            raise web.HTTPError(
                400, "tick 'I have read and accept the agreement' to accept it"
            )
        with self.decision() as session:
            workflow.accept_agreement(
                session,
                self.context.audit,
                name,
                username=self.viewer.name,
                language=self.get_body_argument("language", "en"),
                text_sha256=self.get_body_argument("sha256", ""),
            )
        self.redirect(self.project_url(name))


class OversightHandler(BaseHandler):
    """Suspends, resumes or terminates a project; security administrators only."""

    ACTIONS = {
        "suspend": workflow.suspend,
        "resume": workflow.resume,
        "terminate": workflow.terminate,
    }

    @web.authenticated
    def post(self, name: str, action: str) -> None:
        self.project_page(name)
        if not self.viewer.security_admin:
            self.reject(
                f"project.{action}",
                name,
                f"{self.viewer.name!r} is not in the {ADMIN_GROUP!r} group; only "
                "security administrators suspend, resume or terminate projects",
            )
        with self.decision() as session:
            self.ACTIONS[action](
                session,
                self.context.audit,
                name,
                actor=self.viewer.name,
                reason=self.get_body_argument("reason", ""),
            )
        # Revoke in the hub now rather than at the next scheduled sweep.
        if self.context.revocation is not None:
            self.context.revocation.trigger()
        self.redirect(self.project_url(name))


class NoticeHandler(BaseHandler):
    @web.authenticated
    def post(self, notice_id: str) -> None:
        with self.decision() as session:
            dismiss_notice(session, self.viewer.name, int(notice_id))
        self.redirect(self.context.prefix)


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    def initialize(self, context: EthicsContext) -> None:
        self.hub_auth = context.hub_auth


NAME = r"([a-z0-9][a-z0-9-]{2,63})"

ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    (r"", IndexHandler),
    (r"apply", ApplyHandler),
    (rf"projects/{NAME}", ProjectHandler),
    (rf"projects/{NAME}/edit", EditHandler),
    (rf"projects/{NAME}/review", ReviewHandler),
    (rf"projects/{NAME}/amendments/([0-9]+)/review", ReviewHandler),
    (rf"projects/{NAME}/amendments/([0-9]+)/withdraw", WithdrawHandler),
    (rf"projects/{NAME}/amend", AmendHandler),
    (rf"projects/{NAME}/agreement", AgreementHandler),
    (rf"projects/{NAME}/(suspend|resume|terminate)", OversightHandler),
    (r"notices/([0-9]+)/dismiss", NoticeHandler),
    (r"oauth_callback", OAuthCallbackHandler),
]
"""Paths below the service prefix, and their handlers."""
