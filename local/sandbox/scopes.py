"""The OAuth scopes the sandbox knows: their names, which API call each allows, and their consent labels."""

from types import MappingProxyType
from typing import Final

GMAIL_SEND: Final = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY: Final = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_MODIFY: Final = "https://www.googleapis.com/auth/gmail.modify"
GMAIL_COMPOSE: Final = "https://www.googleapis.com/auth/gmail.compose"
GMAIL_METADATA: Final = "https://www.googleapis.com/auth/gmail.metadata"
GMAIL_FULL: Final = "https://mail.google.com/"
GOOGLE_EMAIL: Final = "https://www.googleapis.com/auth/userinfo.email"
GOOGLE_PROFILE: Final = "https://www.googleapis.com/auth/userinfo.profile"

# Any of these lets a token send or read: the real APIs accept the broader scopes too.
GMAIL_SEND_SCOPES: Final = frozenset({GMAIL_SEND, GMAIL_COMPOSE, GMAIL_MODIFY, GMAIL_FULL})
GMAIL_READ_SCOPES: Final = frozenset({GMAIL_READONLY, GMAIL_MODIFY, GMAIL_FULL})
GMAIL_PROFILE_SCOPES: Final = GMAIL_READ_SCOPES | {GMAIL_COMPOSE, GMAIL_METADATA}
GRAPH_SEND_SCOPES: Final = frozenset({"Mail.Send"})
GRAPH_READ_SCOPES: Final = frozenset({"Mail.Read", "Mail.ReadWrite"})
GRAPH_ME_SCOPES: Final = frozenset({"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All"})
GRAPH_RESOURCE: Final = "https://graph.microsoft.com/"
OIDC_SCOPES: Final = frozenset({"openid", "profile", "email", "offline_access"})
# Google answers with the long names of the short OpenID scopes; clients comparing scopes see that.
GOOGLE_SCOPE_ALIASES: Final = MappingProxyType({"email": GOOGLE_EMAIL, "profile": GOOGLE_PROFILE})

SCOPE_LABELS: Final = MappingProxyType(
    {
        "openid": "Associate you with your personal info",
        GOOGLE_EMAIL: "See your primary email address",
        GOOGLE_PROFILE: "See your personal info",
        GMAIL_SEND: "Send email on your behalf",
        GMAIL_READONLY: "View your email messages and settings",
        GMAIL_MODIFY: "Read, compose and send email from your Gmail account",
        GMAIL_COMPOSE: "Manage drafts and send email",
        GMAIL_FULL: "Read, compose, send and permanently delete all your email",
        "profile": "View your basic profile",
        "email": "View your email address",
        "offline_access": "Maintain access to data you have given it access to",
        "User.Read": "Sign you in and read your profile",
        "Mail.Send": "Send mail as you",
        "Mail.Read": "Read your mail",
        "Mail.ReadWrite": "Read and write access to your mail",
    }
)
