"""A realistic, offline, deterministic demo cohort: synthetic glioma MRI with ground truth.

``generate_cohort(out, n_patients, spacing, seed, n_cohorts, missing)`` (or
``python -m glioma.demo``) builds heads from nilearn's shipped MNI152 template and GM/WM maps (a
skull and scalp shell, four contrasts, one tumour with its class's radiological signs), acquires
them the way three different scanners would (grids, orientation, slice thickness, bias field,
noise, voxel type and file format, with head motion between sequences) and writes::

    out/samples.tsv                                   the sample sheet (paths relative to out)
    out/<cohort>/<patient>/{t1w,t1c,t2w,flair}<ext>   the four sequences
    out/<cohort>/<patient>/roi<ext>                   uint8 lesion mask on the roi_on grid
    out/truth/<cohort>/<patient>/truth.json           class, transforms, tumour centre and signs
    out/truth/<cohort>/<patient>/brain_mask_t1c.nii.gz   true brain on the T1c grid
    out/truth/<cohort>/<patient>/wm_mask_<seq>.nii.gz    true normal white matter per grid
    out/truth/<cohort>/<patient>/bias_<seq>.nii.gz       the multiplicative bias field per grid

With ``missing`` (``--missing FRACTION``, default 0) a share of patients lacks one sequence
each (T1c, FLAIR, T1w, T2w in turn over them, in patient order): its sheet cell is empty and
neither its image nor its ``wm_mask``/``bias`` files are written; ``truth.json`` lists it under
``"missing"``. The ROI is on the FLAIR grid (``roi_on`` flair), or on the T2w grid (``roi_on``
t2w) for a patient without FLAIR.

Spaces and transforms in ``truth.json``:

* *scanner space* of sequence ``s``: the LPS physical space of that file's header, as
  SimpleITK reports it (``TransformIndexToPhysicalPoint``);
* *world space*: the patient's anatomy, the same for all four sequences;
* ``world_from_scanner[s]``: a 4x4 matrix mapping a homogeneous scanner point ``(x, y, z, 1)``
  of sequence ``s`` to world space (the head pose during that acquisition).

The true point in sequence ``s`` matching a T1c point ``p`` is therefore::

    q = inv(world_from_scanner[s]) @ world_from_scanner["t1c"] @ p

and a registration of ``s`` onto T1c is exact when it maps each T1c point ``p`` to that ``q``
(SimpleITK's resampling transforms map output points to input points, i.e. ``p -> q``).
``tumour.centre_world`` is the tumour centre in world space and ``tumour.centre_scanner[s]``
the same point in each scanner space. ``atlas_from_world`` maps world space onto the MNI
atlas the head was built from.
"""

from glioma.demo.cohort import SHEET_COLUMNS, generate_cohort

__all__ = ["SHEET_COLUMNS", "generate_cohort"]
