"""The notebook side of statekit: the pieces behind the ``%state`` magics.

``statekit.magics`` holds the IPython ``Magics`` class; these modules do the
work it dispatches to: parsing (``args``), picking the user's variables
(``namespace``), change detection for saves and auto-checkpoint (``changes``),
saving (``saving``), the other subcommands (``commands``) and progress bars
(``progress``). They call the store; the store never imports them.
"""
