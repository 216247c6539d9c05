"""One module per instrumented library, each with ``patch()`` and ``unpatch()``.

``patch()`` is called by an import hook right after the library is imported
(see :data:`pilotfish.runtime.SERVER_INTEGRATIONS`); it must tolerate versions
whose internals moved (then it patches nothing and says so once) and never
raise into the app's import.
"""
