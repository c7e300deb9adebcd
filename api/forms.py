"""The forms the sign-on and admin pages post, each field with the length past which a post
is refused (a page then says so, and echoes nothing).

A form is one model, so a route takes `form: CodeFormDep` rather than a parameter per field."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form
from pydantic import BaseModel, Field

Code = Annotated[str, Field(max_length=20)]  # typed by hand: spaces and other digits are taken
Password = Annotated[str, Field(max_length=1024)]
Email = Annotated[str, Field(max_length=320)]


class CsrfForm(BaseModel):
    csrf: Annotated[str, Field(max_length=200)] = ""


class StepForm(CsrfForm):
    """A form that steps a flow: the id that makes a double-submitted form run its step once."""

    submission: Annotated[str, Field(max_length=100)] = ""


class CodeForm(StepForm):
    """The setup's emailed code, then its first authenticator code."""

    code: Code = ""


class NewPasswordForm(StepForm):
    password: Password = ""
    confirm: Password = ""


class SetupPasswordForm(NewPasswordForm):
    # The post that opens the setup session must carry the page's id: one typed by hand is refused.
    submission: Annotated[str, Field(min_length=8, max_length=100)] = ""


class ResetLinkForm(NewPasswordForm):
    """A new password from a reset link, with the authenticator code when MFA is on."""

    totp: Code = ""
    mfa: Annotated[str, Field(max_length=1)] = ""  # "1" once the page asked for the authenticator code


class ResetCodeForm(ResetLinkForm):
    """The same with the emailed reset code, and the passkey's answer in place of the
    authenticator code (once the flow asked for it: `passkey` "1")."""

    code: Code = ""
    credential: Annotated[str, Field(max_length=20000)] = ""
    passkey: Annotated[str, Field(max_length=1)] = ""


class ForgotForm(CsrfForm):
    email: Email = ""


class LoginForm(CsrfForm):
    email: Email = ""
    password: Password = ""
    return_to: Annotated[str, Field(max_length=2000)] = ""


class LoginCodeForm(CsrfForm):
    """Sign-in's authenticator code (no flow: no submission id)."""

    code: Code = ""


class CurrentPasswordForm(CsrfForm):
    """A change that needs the password again (turning MFA off)."""

    password: Password = ""


class PasskeyOptionsForm(CsrfForm):
    """Asks for a passkey ceremony's options (and its challenge) before the browser runs it."""

    ceremony: Annotated[str, Field(max_length=10)] = ""


class PasskeyForm(CsrfForm):
    """What the browser's authenticator answered (JSON), with the new passkey's name when
    adding one and where to go once signed in."""

    credential: Annotated[str, Field(max_length=20000)] = ""
    name: Annotated[str, Field(max_length=100)] = ""
    return_to: Annotated[str, Field(max_length=2000)] = ""


class PasskeyNameForm(CsrfForm):
    name: Annotated[str, Field(max_length=100)] = ""


class ChangePasswordForm(CsrfForm):
    """The current password, then the new one twice."""

    current: Password = ""
    password: Password = ""
    confirm: Password = ""


class SessionForm(CsrfForm):
    """One of the person's own sessions, by the name the page gave it."""

    session: Annotated[str, Field(max_length=64)] = ""


class NewLinkForm(CsrfForm):
    """The expired or used setup link's token: who asks is found from it, never typed in."""

    token: Annotated[str, Field(max_length=200)] = ""


class AdminActionForm(CsrfForm):
    """An action on a person, and the admin page to come back to."""

    back: Annotated[str, Field(max_length=500)] = ""


class StaffForm(CsrfForm):
    """Add staff: the fields of the API's StaffCreate, which checks them; the limits here are
    past StaffCreate's, so its own messages say what is wrong."""

    first_name: Annotated[str, Field(max_length=1000)] = ""
    last_name: Annotated[str, Field(max_length=1000)] = ""
    external_email_1: Annotated[str, Field(max_length=1000)] = ""
    is_admin: Annotated[str, Field(max_length=10)] = "no"
    # An operator's choice of organisation (its slug); anyone else adds to their own.
    org: Annotated[str, Field(max_length=100)] = ""


class BulkForm(AdminActionForm):
    """A bulk action on the people selected in the staff list; `confirmed` once its
    confirmation page was answered."""

    action: Annotated[str, Field(max_length=40)] = ""
    confirmed: Annotated[str, Field(max_length=10)] = ""
    ids: Annotated[list[Annotated[str, Field(max_length=40)]], Field(max_length=200)] = []


class StaffEditForm(CsrfForm):
    """Edit a person: the fields of the API's StaffUpdate, which checks them; an empty leave
    date clears it."""

    first_name: Annotated[str, Field(max_length=1000)] = ""
    last_name: Annotated[str, Field(max_length=1000)] = ""
    external_email_1: Annotated[str, Field(max_length=1000)] = ""
    leave_on: Annotated[str, Field(max_length=40)] = ""


class AppForm(CsrfForm):
    """Register or change an app: the fields of the API's ClientCreate, which checks them
    (redirect URIs one a line); the limits here are past its own, so its messages say what
    is wrong."""

    client_name: Annotated[str, Field(max_length=1000)] = ""
    redirect_uris: Annotated[str, Field(max_length=50_000)] = ""
    app_type: Annotated[str, Field(max_length=20)] = "confidential"
    require_consent: Annotated[str, Field(max_length=10)] = "no"
    # The organisations' boxes, shown once there are several ("yes" when they were).
    org_choice: Annotated[str, Field(max_length=10)] = ""
    allowed_org_ids: Annotated[list[Annotated[str, Field(max_length=40)]], Field(max_length=1000)] = []


class OrgForm(CsrfForm):
    """Add or change an organisation: the fields of the API's OrgCreate / OrgUpdate, which
    check them (tenant ids one a line); an empty MFA policy is the deployment's."""

    name: Annotated[str, Field(max_length=1000)] = ""
    slug: Annotated[str, Field(max_length=1000)] = ""
    entra_tenant_ids: Annotated[str, Field(max_length=10_000)] = ""
    mfa_policy: Annotated[str, Field(max_length=20)] = ""
    sender_name: Annotated[str, Field(max_length=1000)] = ""


class ConsentForm(CsrfForm):
    """Allow or Cancel on the consent page."""

    decision: Annotated[str, Field(max_length=10)] = ""


CsrfFormDep = Annotated[CsrfForm, Form()]
StepFormDep = Annotated[StepForm, Form()]
CodeFormDep = Annotated[CodeForm, Form()]
SetupPasswordFormDep = Annotated[SetupPasswordForm, Form()]
ResetLinkFormDep = Annotated[ResetLinkForm, Form()]
ResetCodeFormDep = Annotated[ResetCodeForm, Form()]
ForgotFormDep = Annotated[ForgotForm, Form()]
LoginFormDep = Annotated[LoginForm, Form()]
LoginCodeFormDep = Annotated[LoginCodeForm, Form()]
CurrentPasswordFormDep = Annotated[CurrentPasswordForm, Form()]
PasskeyOptionsFormDep = Annotated[PasskeyOptionsForm, Form()]
PasskeyFormDep = Annotated[PasskeyForm, Form()]
PasskeyNameFormDep = Annotated[PasskeyNameForm, Form()]
ChangePasswordFormDep = Annotated[ChangePasswordForm, Form()]
SessionFormDep = Annotated[SessionForm, Form()]
NewLinkFormDep = Annotated[NewLinkForm, Form()]
AdminActionFormDep = Annotated[AdminActionForm, Form()]
StaffFormDep = Annotated[StaffForm, Form()]
OrgFormDep = Annotated[OrgForm, Form()]
StaffEditFormDep = Annotated[StaffEditForm, Form()]
BulkFormDep = Annotated[BulkForm, Form()]
AppFormDep = Annotated[AppForm, Form()]
ConsentFormDep = Annotated[ConsentForm, Form()]
