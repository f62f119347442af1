// LoRA Trainer: the WebUI's LoRA cards (txt2img's and img2img's Lora tabs) show a newly saved epoch,
// or a preview just chosen in the Review, without the user pressing their Refresh.
// The Train panel's saved-LoRA list (lora_trainer/ui/render.py) sits in a block naming its project;
// a name that block did not hold before, in a project this page has already seen, is a new file.
// The Review's message after "Use as preview" carries data-refresh-cards. Either way this clicks
// Forge's hidden refresh buttons (modules/ui_extra_networks.py: <tab>_lora_extra_refresh_internal),
// as Forge's own Refresh does. Standalone there are none, and nothing happens.
(function () {
    "use strict";
    if (window.loraTrainerCardsReady) {
        return;
    }
    window.loraTrainerCardsReady = true;

    var REFRESH_BUTTONS = ["txt2img_lora_extra_refresh_internal", "img2img_lora_extra_refresh_internal"];
    var namesByProject = {};  // project -> {prompt name: true}, as first seen on this page
    var marksSeen = {};

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function refreshCards() {
        REFRESH_BUTTONS.forEach(function (id) {
            var button = root().querySelector("#" + id);
            if (button) {
                button.dispatchEvent(new Event("click"));
            }
        });
    }

    function newSavedNames() {
        var list = root().querySelector("#lora_trainer_saved .lora-trainer-saved-list");
        if (!list) {
            return false;
        }
        var project = list.getAttribute("data-project");
        var names = Array.prototype.map.call(list.querySelectorAll("[data-copy]"), function (button) {
            return button.getAttribute("data-copy");
        });
        var known = namesByProject[project];
        if (!known) {  // the project's list as the page first shows it: nothing new yet
            namesByProject[project] = {};
            names.forEach(function (name) { namesByProject[project][name] = true; });
            return false;
        }
        var added = false;
        names.forEach(function (name) {
            if (!known[name]) {
                known[name] = true;
                added = true;
            }
        });
        return added;
    }

    function newPreviewMarks() {
        var added = false;
        root().querySelectorAll("[data-refresh-cards]").forEach(function (mark) {
            var stamp = mark.getAttribute("data-refresh-cards");
            if (!marksSeen[stamp]) {
                marksSeen[stamp] = true;
                added = true;
            }
        });
        return added;
    }

    setInterval(function () {
        var saved = newSavedNames();
        var previews = newPreviewMarks();
        if (saved || previews) {
            refreshCards();
        }
    }, 1000);
})();
