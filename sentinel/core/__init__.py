"""The bottom layer: types and helpers every other layer may use, and which import no other layer.

:mod:`sentinel.core.types` holds the alert (:class:`~sentinel.core.types.Alert`), its
severities (:class:`~sentinel.core.types.Severity`) and the per-key group of a
parsed batch (:class:`~sentinel.core.types.KeyGroup`); :mod:`sentinel.core.times`
the one RFC 3339 format and parse. Nothing here imports Bytewax or any other
package of the project.
"""
