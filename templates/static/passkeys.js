// Passkeys: each form marked data-passkey asks the server for its ceremony's options, runs the
// ceremony in the browser and posts the authenticator's answer in the form. Without passkey
// support the forms stay hidden. A file, not an inline script, so the CSP stays strict.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function bytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, function (ch) { return ch.charCodeAt(0); });
  }

  function text(buffer) {
    var binary = String.fromCharCode.apply(null, new Uint8Array(buffer));
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    (list || []).forEach(function (item) { item.id = bytes(item.id); });
  }

  function answer(credential) {
    var r = credential.response;
    var response = { clientDataJSON: text(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = text(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = text(r.authenticatorData);
      response.signature = text(r.signature);
      response.userHandle = r.userHandle ? text(r.userHandle) : null;
    }
    return JSON.stringify({
      id: credential.id,
      rawId: text(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults()
    });
  }

  function ceremony(kind, options) {
    options.challenge = bytes(options.challenge);
    if (kind === "register") {
      options.user.id = bytes(options.user.id);
      withIds(options.excludeCredentials);
      return navigator.credentials.create({ publicKey: options });
    }
    withIds(options.allowCredentials);
    return navigator.credentials.get({ publicKey: options });
  }

  function why(error) {
    if (error && error.name === "NotAllowedError") {
      return "The passkey step was cancelled or timed out. Try again.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This device already holds a passkey for your account.";
    }
    return (error && error.server) || "Your browser couldn't use a passkey. Try again, or use another way.";
  }

  document.querySelectorAll("form[data-passkey]").forEach(function (form) {
    var kind = form.getAttribute("data-passkey");
    var problem = form.querySelector("[data-passkey-problem]");
    var name = form.elements.namedItem("name");
    function show(message) {
      problem.textContent = message;
      problem.hidden = false;
    }
    form.hidden = false;
    form.addEventListener("submit", function (event) {
      var typed = form.elements.namedItem("totp");
      if (typed && typed.value.trim()) {
        return; // a code typed in its place: the form goes as it is
      }
      event.preventDefault();
      problem.hidden = true;
      if (name && !name.value.trim()) {
        show("Give the passkey a name, such as Office PC.");
        name.focus();
        return;
      }
      var body = new URLSearchParams({ csrf: form.elements.namedItem("csrf").value, ceremony: kind });
      fetch("/sso/passkeys/options", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (reply) {
          return reply.json().then(function (options) {
            if (!reply.ok) {
              throw { server: options.error };
            }
            return ceremony(kind, options);
          });
        })
        .then(function (credential) {
          form.elements.namedItem("credential").value = answer(credential);
          HTMLFormElement.prototype.submit.call(form);
        })
        .catch(function (error) { show(why(error)); });
    });
  });
})();
