"""GLB bytes -> one mesh object placed at a point (the 3D cursor by default), or nothing at all.

Placement: Euler XYZ rotation (the importer's quaternion mode is replaced), the origin moved to
the bottom centre ("stand on the point", the default) or the bounding-box centre, rotated like
the 3D cursor when the user preference "Align New Objects: 3D Cursor" is set, and optionally
scaled to a real-world height in metres (by the scene's unit scale).

Blender's glTF importer may add more than the mesh (a parent empty, a collection for the glTF
scene, extra materials or images); everything it created besides our object, its mesh and its
material is removed. If anything fails, everything it created is removed and the selection is
restored, so a failure leaves the scene as it was. The temporary .glb is always deleted.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix, Vector

# Data-block kinds the importer can create, in an order that is safe to remove them in.
TRACKED = ("objects", "collections", "meshes", "materials", "node_groups", "textures", "images", "actions")
# Importer options, where this Blender's importer has them: no scene custom properties, and no
# selection games (we select the result ourselves).
IMPORT_OPTIONS = {"import_shading": "SMOOTH", "import_scene_extras": False, "import_select_created_objects": False}


def _snapshot() -> dict[str, set[int]]:
    return {kind: {block.as_pointer() for block in getattr(bpy.data, kind)} for kind in TRACKED}


def _created_since(before: dict[str, set[int]]) -> dict[str, list[bpy.types.ID]]:
    return {kind: [b for b in getattr(bpy.data, kind) if b.as_pointer() not in before[kind]] for kind in TRACKED}


def _remove(blocks: dict[str, list[bpy.types.ID]], keep: frozenset[int] = frozenset()) -> None:
    for kind in TRACKED:
        collection = getattr(bpy.data, kind)
        for block in blocks[kind]:
            if block.as_pointer() not in keep:
                collection.remove(block)


def _gltf_importer() -> Any:
    """bpy.ops.import_scene.gltf, typed loosely: its options differ between Blender releases."""
    return bpy.ops.import_scene.gltf


def _import_options() -> dict[str, object]:
    available = _gltf_importer().get_rna_type().properties.keys()
    return {name: value for name, value in IMPORT_OPTIONS.items() if name in available}


class Placement:
    """Where and how the object goes: `at` (None: the 3D cursor), BASE or CENTER, height in metres (0: as made)."""

    def __init__(self, mode: str = "BASE", height_m: float = 0.0, at: Vector | None = None) -> None:
        self.mode = mode
        self.height_m = height_m
        self.at = at


def import_glb(
    context: bpy.types.Context, glb: bytes, name: str, placement: Placement | None = None
) -> bpy.types.Object:
    """Import `glb` as one object named `name`, placed by `placement`, selected and active."""
    before = _snapshot()
    previous_active = context.view_layer.objects.active
    previous_selection = [o for o in _view_layer_objects(context) if o.select_get()]
    handle, path = tempfile.mkstemp(suffix=".glb", prefix="image_to_3d_")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(glb)
        result = _gltf_importer()(filepath=path, **_import_options())
        if "FINISHED" not in result:
            raise RuntimeError("Blender's glTF importer could not read the mesh the server sent.")
        created = _created_since(before)
        meshes = [o for o in bpy.data.objects if o.as_pointer() not in before["objects"] and o.type == "MESH"]
        if len(meshes) != 1:
            raise RuntimeError(f"Expected one mesh in the server's answer, found {len(meshes)}.")
        obj = meshes[0]
        _finish_object(context, obj, name, placement or Placement())
        keep = {obj.as_pointer(), obj.data.as_pointer()}
        keep |= {slot.material.as_pointer() for slot in obj.material_slots if slot.material}
        keep |= {image.as_pointer() for image in _images_used(obj)}
        _remove(created, frozenset(keep))
        for other in _view_layer_objects(context):
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        context.view_layer.update()  # matrix_world and dimensions as placed, for the caller
        return obj
    except BaseException:
        _remove(_created_since(before))
        for other in previous_selection:
            if other.name in context.view_layer.objects:
                other.select_set(True)
        context.view_layer.objects.active = previous_active
        raise
    finally:
        if os.path.exists(path):
            os.remove(path)


def _view_layer_objects(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The view layer's objects; a script that just removed objects may leave empty (None) entries."""
    return [o for o in context.view_layer.objects if o is not None]


def _finish_object(context: bpy.types.Context, obj: bpy.types.Object, name: str, placement: Placement) -> None:
    """Unparented, in the active collection, placed, smooth, named after the image."""
    world = obj.matrix_world.copy()
    obj.parent = None
    obj.matrix_world = world
    for collection in list(obj.users_collection):
        collection.objects.unlink(obj)
    context.collection.objects.link(obj)
    obj.name = name
    obj.data.name = name
    place(context, obj, placement)
    obj.data.shade_smooth()
    material = ensure_vertex_color_material(obj)
    material.name = name
    for image in _images_used(obj):  # a textured GLB (texture_size): its image, kept in the .blend
        image.name = obj.name
        if image.packed_file is None:
            image.pack()


def place(context: bpy.types.Context, obj: bpy.types.Object, placement: Placement) -> None:
    """Origin at the mesh's bottom centre (or centre), Euler XYZ, scaled and moved to the point."""
    mesh = obj.data
    world = obj.matrix_world.copy()
    mesh.transform(world)  # the importer's own transform (none for our server's GLBs) into the mesh
    points = np.zeros(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", points)
    points = points.reshape(-1, 3) if len(points) else np.zeros((1, 3), dtype=np.float32)
    low, high = Vector(points.min(axis=0).tolist()), Vector(points.max(axis=0).tolist())
    pivot = (low + high) / 2
    if placement.mode == "BASE":
        pivot.z = low.z
    mesh.transform(Matrix.Translation((-pivot.x, -pivot.y, -pivot.z)))
    obj.rotation_mode = "XYZ"
    obj.matrix_world = Matrix.Identity(4)
    cursor = context.scene.cursor
    if context.preferences.edit.object_align == "CURSOR":
        obj.rotation_euler = cursor.matrix.to_euler("XYZ")
    tall = high.z - low.z
    if placement.height_m > 0 and tall > 0:
        unit_scale = context.scene.unit_settings.scale_length or 1.0
        factor = placement.height_m / unit_scale / tall
        obj.scale = (factor, factor, factor)
    obj.location = placement.at if placement.at is not None else cursor.location


def _images_used(obj: bpy.types.Object) -> list[bpy.types.Image]:
    """Images the kept material shows: the baked texture of a textured GLB, none with vertex colours."""
    images = []
    for slot in obj.material_slots:
        if slot.material and slot.material.node_tree:
            images += [
                n.image
                for n in slot.material.node_tree.nodes
                if isinstance(n, bpy.types.ShaderNodeTexImage) and n.image
            ]
    return images


def ensure_vertex_color_material(obj: bpy.types.Object) -> bpy.types.Material:
    """A material whose Base Color is the mesh's colour attribute (Material Preview, EEVEE, Cycles).
    A textured GLB has no colour attribute: its Image Texture node already feeds Base Color."""
    mesh = obj.data
    attributes = mesh.color_attributes
    attribute = attributes.active_color or (attributes[0] if len(attributes) else None)
    if attribute is not None:
        attributes.active_color = attribute  # what Solid view's "Attribute" colour shows
        attributes.render_color_index = attributes.find(attribute.name)
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(obj.name)
        mesh.materials.append(material)
    if material.node_tree is None:
        material.use_nodes = True  # already true for new and imported materials in 5.0, where it is deprecated
    tree = material.node_tree
    principled = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if principled is None:
        principled = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL"), None)
        output = output or tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(principled.outputs["BSDF"], output.inputs["Surface"])
    base = principled.inputs["Base Color"]
    for node in tree.nodes:  # the importer's own node names no attribute ("the default one"): name ours
        if isinstance(node, bpy.types.ShaderNodeVertexColor) and not node.layer_name and attribute is not None:
            node.layer_name = attribute.name
    if attribute is not None and not base.is_linked:
        node = tree.nodes.new("ShaderNodeVertexColor")
        node.layer_name = attribute.name
        node.location = (principled.location.x - 300, principled.location.y)
        tree.links.new(node.outputs["Color"], base)
    return material
